"""Class-conditional DiT (DiT-XL/2 and the other ImageNet sizes) as this pack builds it (``nodes.dit.model``):
one stream of adaLN-Zero blocks under the ``double_block`` patch key, ``x + gate_msa * attn(...)`` then
``x + gate_mlp * mlp(modulate(norm2(x)))``, six modulation vectors from ``c`` = timestep + class embedding. The
last block's output is clustered; CFG cond and uncond are separate slots, cached and clustered apart.
"""

from __future__ import annotations

import math

import torch

from ..adapters.modulation import modulation_chunks
from ..adapters.spec import BlockKind, Branch, CallTokens, Family, Mod, Stream, TokenMlp


def _dit_class():
    from ..dit.model import DiT
    return DiT


def modulation(block, args: dict, extras: dict) -> dict:
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m.unsqueeze(1) for m in block.modulation(args["vec"]))
    return {"msa": Mod(shift_msa, scale_msa, gate_msa), "mlp": Mod(shift_mlp, scale_mlp, gate_mlp)}


def cached_modulation(block, args: dict, extras: dict) -> dict:
    """A cached step's modulation: the attention gate and the MLP modulation (rows 2-5 of 6)."""
    seq = getattr(block, "adaLN_modulation", None)
    if not isinstance(seq, torch.nn.Sequential) or len(seq) != 2 or not isinstance(seq[0], torch.nn.SiLU) \
            or not isinstance(seq[1], torch.nn.Linear):
        return modulation(block, args, extras)
    gate_msa, shift_mlp, scale_mlp, gate_mlp = (m.unsqueeze(1) for m in modulation_chunks(
        seq[1], torch.nn.functional.silu(args["vec"]), 6, 2, 4))
    return {"msa": Mod(gate=gate_msa), "mlp": Mod(shift_mlp, scale_mlp, gate_mlp)}


def tokens(dm, bound: dict, config):
    x = bound.get("x")
    if x is None or x.ndim != 4:
        return "unexpected input layout"
    p = dm.patch_size
    return CallTokens(batch=x.shape[0], grid=(1, math.ceil(x.shape[-2] / p), math.ceil(x.shape[-1] / p)))


BLOCK = BlockKind(
    key="double_block", blocks="blocks",
    streams=(Stream("img", (Branch("attn", "attn", "msa"),
                            Branch("mlp", "mlp", "mlp", TokenMlp("norm2", "mlp"))), clusters="img"),),
    modulation=modulation, modulation_modules=("adaLN_modulation",), clusters=True,
    cached_modulation=cached_modulation)

DIT = Family(
    key="dit", name="DiT", model_class=_dit_class, block_kinds=(BLOCK,), tokens=tokens,
    # the reference DiT sample script: interval 4, warm-up 2 (first_enhance), Taylor order 4
    reference_settings={"fresh_interval": 4, "warmup_steps": 2, "taylor_order": 4},
    notes="the pack's own DiT (ComfyUI has none), loaded with Load DiT Checkpoint (ClusCa)")
