"""Class-conditional DiT (DiT-XL/2 and other ImageNet DiT sizes) as this pack builds it: ``nodes.dit.model.DiT``.

Layout: image tokens only, one stream of adaLN-Zero blocks patched as ``("double_block", i)``; the block
args are ``{"img": tokens, "vec": c, "transformer_options"}``, c = timestep + class embedding. Each block
caches two branches, the attention output (``attn``) and the MLP output (``mlp``). The last block's output
is clustered; every cached step recomputes the six adaLN modulation vectors from the current c, forecasts
the attention branch and refreshes the MLP branch on one token per cluster, as the reference's DiT code
does. CFG cond and uncond are separate conditioning slots, so they are cached and clustered independently.
"""

from __future__ import annotations

import math

from ..dit.model import DiT, modulate
from .base import Adapter, CallInfo, adaptive_presets, close_enough
from .block_steps import forecast_attn_mlp, run_full_captured


def block_layout_ok(block) -> bool:
    return (all(hasattr(block, n) for n in ("attn", "mlp", "norm2", "adaLN_modulation", "modulation"))
            and hasattr(block.attn, "proj"))


def dit_flops(tokens: int, hidden: int, mlp_hidden: int, depth: int, fresh_tokens: int) -> tuple[float, float]:
    """Multiply-add FLOPs (x2) of one evaluation of the block stack, full and cached, per batch row."""
    n, d, hm = tokens, hidden, mlp_hidden
    modulation = 2 * d * 6 * d
    full = 2 * n * (3 * d * d + d * d + 2 * d * hm) + 4 * n * n * d + modulation
    cached = modulation + 2 * fresh_tokens * 2 * d * hm
    return depth * full, depth * cached


class DiTAdapter(Adapter):
    key = "dit"
    family = "DiT"
    block_kinds = ("double_block",)
    # The reference DiT sample script: interval 4, warm-up 2 (first_enhance), Taylor order 4.
    reference_settings = {"fresh_interval": 4, "warmup_steps": 2, "taylor_order": 4}
    #: measured on the reference model: docs/benchmarks.md, "Presets"
    presets = adaptive_presets(0.03, 0.05, 0.08)

    @classmethod
    def probe(cls, diffusion_model) -> tuple[bool, str]:
        if type(diffusion_model) is not DiT:
            return False, ""
        blocks = getattr(diffusion_model, "blocks", None)
        if not blocks:
            return False, "this DiT model has no blocks"
        if not all(block_layout_ok(b) for b in blocks):
            return False, "this DiT model's blocks do not have the layout ClusCa knows"
        return True, ""

    @classmethod
    def block_count(cls, diffusion_model, kind: str) -> int:
        return len(diffusion_model.blocks)

    @classmethod
    def block_outputs(cls, kind: str) -> tuple[str, ...]:
        return ("img",)    # single-stream blocks under ComfyUI's "double_block" key: no text stream

    @classmethod
    def describe_call(cls, diffusion_model, bound: dict, config):
        x = bound.get("x")
        if x is None or x.ndim != 4:
            return "unexpected input layout"
        p = diffusion_model.patch_size
        rows, cols = math.ceil(x.shape[-2] / p), math.ceil(x.shape[-1] / p)
        n = rows * cols
        hidden = diffusion_model.hidden_size
        depth = len(diffusion_model.blocks)
        full, cached = dit_flops(n, hidden, int(hidden * diffusion_model.mlp_ratio), depth, min(config.clusters, n))
        return CallInfo(batch=x.shape[0], fingerprint=(tuple(x.shape[1:]), x.dtype, str(x.device)),
                        geometry={"blocks": depth, "image tokens": n}, full_flops=full, cached_flops=cached,
                        grid=(1, rows, cols))

    @classmethod
    def run_block(cls, kind, index, args, extra, plan, inner=None):
        dm = plan.model
        block = dm.blocks[index]
        key = ("dit", index)
        if plan.full:
            def adds_up(saved, captured, out):
                m = block.modulation(args["vec"])
                rebuilt = saved["img"] + m[2].unsqueeze(1) * captured["attn"] + m[5].unsqueeze(1) * captured["mlp"]
                return close_enough(rebuilt, out["img"])

            after = None
            if index == len(dm.blocks) - 1:
                def after(out):
                    plan.cluster("img", out["img"])
            return run_full_captured(plan, f"DiT block {index}", key, {"attn": block.attn, "mlp": block.mlp}, args,
                                     extra, inner, keep=("img",), adds_up=adds_up, after=after)

        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.modulation(args["vec"])
        img = forecast_attn_mlp(plan, args["img"], gate_msa.unsqueeze(1), gate_mlp.unsqueeze(1), key + ("attn",),
                                key + ("mlp",), "img",
                                lambda t: block.mlp(modulate(block.norm2(t), shift_mlp, scale_mlp)))
        return {"img": img}
