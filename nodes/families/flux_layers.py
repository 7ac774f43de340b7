"""The FLUX-style blocks of ``comfy.ldm.flux.layers`` (``DoubleStreamBlock`` / ``SingleStreamBlock``), shared
by FLUX.1, FLUX.2 / Klein, Chroma (Radiance), Ovis-Image / LongCat-Image and HunyuanVideo.

Double blocks: an image and a text stream, each ``x + gate1 * attn.proj(joint attention)`` then
``x + gate2 * mlp(norm2(x) * (1 + scale2) + shift2)``; the last one's output is clustered (the paper).
Single blocks: one parallel branch on the joint text + image sequence, ``x + gate * linear2(cat(attn, mlp))``.
Modulation comes from the block's own ``img_mod`` / ``txt_mod`` / ``modulation`` (FLUX.1, HunyuanVideo) or, for
blocks built without it (FLUX.2's global modulation, Chroma's approximator), ready-made in the patch's ``vec``.

Edit references with their own timestep (``index_timestep_zero``, ComfyUI versions whose ``forward_orig`` takes
``timestep_zero_index``): the forward runs the timestep embedding for the batch and for timestep zero, and the
global modulation then holds two rows per batch row, ``(B, 2, D)``: row 0 for the target image (and, in the
single blocks, the text), row 1 for the reference tokens at the end of the image stream; the blocks apply them
per token range (``modulation_dims``). The cached steps do the same with per-token modulations (``spec.per_token``).
"""

from __future__ import annotations

import functools
import inspect
import math

import torch

from ..adapters.runner import COPY_BRANCH_OUTPUTS
from ..adapters.modulation import modulation_chunks
from ..adapters.spec import BlockKind, Branch, CallTokens, Mod, ParallelSplit, Stream, TokenMlp, as_mod, per_token

#: CallTokens.extras key: (target image tokens, text tokens) of a call whose reference latents have their own
#: timestep (``index_timestep_zero``): the image stream's tokens from the first number on, and the joint
#: text + image stream's from their sum on, take the timestep-zero row of the modulation (as the forward's
#: ``modulation_dims``, which run from the target image tokens to the end of the stream)
TIMESTEP_ZERO_FROM = "timestep_zero_from"


def _rows_from(m, tokens: int, start: int) -> Mod:
    """A ``(B, 2, D)`` modulation as one per token: tokens ``start`` and after take row 1, the others row 0."""
    if m.shift.ndim != 3 or m.shift.shape[-2] != 2:
        raise ValueError(f"expected two modulation rows per batch row, got shape {tuple(m.shift.shape)}")
    rows = [Mod(*(t[:, i:i + 1] for t in (m.shift, m.scale, m.gate))) for i in range(2)]
    index = torch.zeros(tokens, dtype=torch.long, device=m.shift.device)
    index[start:] = 1
    return per_token(rows, index)


def double_modulation(block, args: dict, extras: dict) -> dict:
    vec = args["vec"]
    if getattr(block, "modulation", True):
        (img1, img2), (txt1, txt2) = block.img_mod(vec), block.txt_mod(vec)
    else:
        (img1, img2), (txt1, txt2) = vec
    zero = extras.get(TIMESTEP_ZERO_FROM)
    if zero is not None:
        n = args["img"].shape[1]
        img1, img2 = _rows_from(img1, n, zero[0]), _rows_from(img2, n, zero[0])
    return {"img_attn": as_mod(img1), "img_mlp": as_mod(img2), "txt_attn": as_mod(txt1), "txt_mlp": as_mod(txt2)}


def single_modulation(block, args: dict, extras: dict) -> dict:
    vec = args["vec"]
    mod = block.modulation(vec)[0] if getattr(block, "modulation", None) is not None else vec
    zero = extras.get(TIMESTEP_ZERO_FROM)
    return {"mod": as_mod(mod) if zero is None else _rows_from(mod, args["img"].shape[1], zero[0] + zero[1])}


def _modulation_input(block_mod, vec):
    """What ``Modulation.forward`` feeds its linear; None when ``block_mod`` is not ComfyUI's ``Modulation``."""
    if type(block_mod).__name__ != "Modulation" or not isinstance(getattr(block_mod, "lin", None), torch.nn.Linear):
        return None
    if vec.ndim == 2:
        vec = vec[:, None, :]
    return torch.nn.functional.silu(vec)


def double_cached_modulation(block, args: dict, extras: dict) -> dict:
    """A cached step's modulation: the attention gates and the MLP modulations (rows 2-5 of 6)."""
    mods = (getattr(block, "img_mod", None), getattr(block, "txt_mod", None))
    if not getattr(block, "modulation", True) or extras.get(TIMESTEP_ZERO_FROM) is not None \
            or any(getattr(m, "multiplier", None) != 6 for m in mods):
        return double_modulation(block, args, extras)
    out = {}
    for name, m in zip(("img", "txt"), mods):
        x = _modulation_input(m, args["vec"])
        if x is None:
            return double_modulation(block, args, extras)
        gate1, shift2, scale2, gate2 = modulation_chunks(m.lin, x, 6, 2, 4)
        out[f"{name}_attn"] = Mod(gate=gate1)
        out[f"{name}_mlp"] = Mod(shift2, scale2, gate2)
    return out


def single_cached_modulation(block, args: dict, extras: dict) -> dict:
    """A cached step's modulation of a single block whose output is forecast whole: the gate (row 2 of 3)."""
    m = getattr(block, "modulation", None)
    x = _modulation_input(m, args["vec"]) if m is not None else None
    if x is None or getattr(m, "multiplier", None) != 3 or extras.get(TIMESTEP_ZERO_FROM) is not None:
        return single_modulation(block, args, extras)
    (gate,) = modulation_chunks(m.lin, x, 3, 2, 1)
    return {"mod": Mod(gate=gate)}


def _stream(name: str) -> Stream:
    return Stream(name, (Branch("attn", f"{name}_attn.proj", f"{name}_attn"),
                         Branch("mlp", f"{name}_mlp", f"{name}_mlp", TokenMlp(f"{name}_norm2", f"{name}_mlp"))),
                  clusters=name)


def _mlp_projection(block, act):
    """linear2's output for an MLP activation alone (the attention inputs zeroed; the bias included)."""
    zeros = act.new_zeros(*act.shape[:-1], block.hidden_size)
    return block.linear2(torch.cat((zeros, act), dim=-1))


def _single_mlp_part(block, projection_input):
    """The MLP part of a single block's output, from linear2's captured input ``cat(attn, mlp_act)``."""
    return _mlp_projection(block, projection_input[..., block.hidden_size:])


def _single_mlp(block, mod: Mod, x):
    """The MLP part of a single block for the tokens ``x``: its own pre_norm, modulation, linear1, activation
    and linear2."""
    h = block.linear1(mod.modulate(block.pre_norm(x)))
    return _mlp_projection(block, block.mlp_act(h[..., 3 * block.hidden_size:]))


DOUBLE = BlockKind(
    key="double_block", blocks="double_blocks", streams=(_stream("img"), _stream("txt")),
    modulation=double_modulation, modulation_modules=("img_mod", "txt_mod"), clusters=True,
    cached_modulation=double_cached_modulation)

SINGLE = BlockKind(
    key="single_block", blocks="single_blocks",
    streams=(Stream("img", (Branch("total", "linear2", "mod"),), clusters="joint"),),
    modulation=single_modulation, modulation_modules=("modulation",), joint=("txt", "img"),
    cached_modulation=single_cached_modulation,
    # refresh_scope="all": the MLP half of the parallel single blocks refreshed too (not with the yak MLP of
    # Ovis / LongCat, whose activation needs both halves of linear1's MLP part)
    split=ParallelSplit(mlp_part=_single_mlp_part, mlp=_single_mlp,
                        supported=lambda block: not getattr(block, "yak_mlp", False)))


def patch_grid(x, patch: int) -> tuple:
    """(1, rows, columns) of the tokens of a (B, C, H, W) latent cut into ``patch`` x ``patch`` patches (the
    latent is padded to the patch size first)."""
    return (1, math.ceil(x.shape[-2] / patch), math.ceil(x.shape[-1] / patch))


@functools.lru_cache(maxsize=None)
def supports_timestep_zero(model_class) -> bool:
    """Whether this ComfyUI's FLUX forward gives ``index_timestep_zero`` references their own timestep (its
    ``forward_orig`` takes ``timestep_zero_index``; older versions, e.g. 0.3.75, treat the method like "offset")."""
    try:
        return "timestep_zero_index" in inspect.signature(model_class.forward_orig).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def image_tokens(dm, bound: dict, config, text_key: str = "context"):
    """CallTokens of a FLUX-style call: image tokens from the latent, text from the context, and reference
    latents (Kontext, FLUX.2 edit) appended after the target tokens. The reference method is the call's
    (``ref_latents_method``) or else the model's ``params.default_ref_method`` (which the FluxKVCache node and
    FLUX.2 edit checkpoints set). References with their own timestep (``index_timestep_zero``) get per-token
    modulation on cached steps (``TIMESTEP_ZERO_FROM``) where the blocks take it ready-made (FLUX.2's global
    modulation); blocks that compute their own modulation cannot take two timesteps, so such calls run in full."""
    x, context = bound.get("x"), bound.get(text_key)
    if x is None or context is None or x.ndim != 4 or context.ndim != 3:
        return "unexpected input layout"
    refs = bound.get("ref_latents")
    params = getattr(dm, "params", None)
    method = bound.get("ref_latents_method") or getattr(params, "default_ref_method", "offset")
    patch = dm.patch_size
    grid = patch_grid(x, patch)
    n_ref = 0
    for r in refs or ():
        _, rows, cols = patch_grid(r, patch)
        n_ref += rows * cols
    extras = {}
    # as the forward decides: a reference list, the method, and a non-zero reference index
    if refs and method == "index_timestep_zero" and supports_timestep_zero(type(dm)) \
            and getattr(params, "ref_index_scale", 1.0) * len(refs) > 0:
        blocks = getattr(dm, "double_blocks", None) or getattr(dm, "single_blocks", None)
        if not blocks or getattr(blocks[0], "modulation", None):
            return "reference latents with their own timestep (index_timestep_zero) are computed in full"
        # the blocks apply these gates in place, to the attention / MLP outputs they just computed
        extras.update({TIMESTEP_ZERO_FROM: (grid[1] * grid[2], context.shape[1]), COPY_BRANCH_OUTPUTS: True})
    return CallTokens(batch=x.shape[0], grid=grid, text=context.shape[1], reference=n_ref,
                      extras=extras, fingerprint=(tuple(tuple(r.shape[1:]) for r in refs or ()), bool(extras)))
