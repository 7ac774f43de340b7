"""FLUX.1 (dev, schnell, Fill, Kontext) as ComfyUI builds it: ``comfy.ldm.flux.model.Flux``.

Layout: text tokens first in the joint sequence; double blocks take ``img``/``txt`` separately; single
blocks run on ``cat(txt, img)``. Kontext / reference latents are appended after the target image tokens
and go through the same cache as every other image token (forecast, clustered and refreshed like them);
only reference modes with a per-token timestep (``index_timestep_zero``) are computed in full.
FLUX.2 (global modulation, four RoPE axes) is not handled and passes through unchanged.
"""

from __future__ import annotations

import math

from .base import Adapter, CallInfo, adaptive_presets
from .flux_blocks import double_layout_ok, flux_style_flops, run_double_block, run_single_block, single_layout_ok


def _tokens(latent, patch: int) -> int:
    h, w = latent.shape[-2], latent.shape[-1]
    return math.ceil(h / patch) * math.ceil(w / patch)


class FluxAdapter(Adapter):
    key = "flux"
    family = "FLUX.1"
    block_kinds = ("double_block", "single_block")
    #: measured on the reference model: docs/benchmarks.md, "Presets"
    presets = adaptive_presets(0.05, 0.08, 0.12)

    @classmethod
    def probe(cls, diffusion_model) -> tuple[bool, str]:
        try:
            from comfy.ldm.flux.model import Flux
        except ImportError:
            return False, ""
        if type(diffusion_model) is not Flux:
            return False, ""
        params = getattr(diffusion_model, "params", None)
        if getattr(params, "global_modulation", False) or len(getattr(params, "axes_dim", ())) != 3:
            return False, "FLUX.2 models are not supported by ClusCa yet"
        doubles = getattr(diffusion_model, "double_blocks", None)
        singles = getattr(diffusion_model, "single_blocks", None)
        if not doubles or singles is None:
            return False, "this FLUX model has no double-stream blocks"
        if not all(double_layout_ok(b) for b in doubles) or not all(single_layout_ok(b) for b in singles):
            return False, "this FLUX model's blocks do not have the layout ClusCa knows"
        return True, ""

    @classmethod
    def block_count(cls, diffusion_model, kind: str) -> int:
        return len(diffusion_model.double_blocks) if kind == "double_block" else len(diffusion_model.single_blocks)

    @classmethod
    def describe_call(cls, diffusion_model, bound: dict, config):
        x, context = bound.get("x"), bound.get("context")
        if x is None or context is None or x.ndim != 4 or context.ndim != 3:
            return "unexpected input layout"
        if bound.get("timestep_zero_index") is not None or bound.get("ref_latents_method") == "index_timestep_zero":
            return "reference latents with their own timestep are computed in full"
        patch = diffusion_model.patch_size
        n_img = _tokens(x, patch)
        refs = bound.get("ref_latents") or []
        n_ref = sum(_tokens(r, patch) for r in refs)
        n_txt = context.shape[1]
        k = config.clusters
        hidden = diffusion_model.hidden_size
        mlp_hidden = int(hidden * diffusion_model.params.mlp_ratio)
        nd, ns = len(diffusion_model.double_blocks), len(diffusion_model.single_blocks)
        full, cached = flux_style_flops(n_img + n_ref, n_txt, hidden, mlp_hidden, nd, ns,
                                        min(k, n_img + n_ref), min(k, n_txt))
        geometry = {"blocks": f"{nd}+{ns}", "image tokens": n_img, "text tokens": n_txt}
        if n_ref:
            geometry["reference tokens"] = n_ref
        fingerprint = (tuple(x.shape[1:]), n_txt, tuple(tuple(r.shape[1:]) for r in refs), x.dtype, str(x.device))
        grid = (1, math.ceil(x.shape[-2] / patch), math.ceil(x.shape[-1] / patch))
        return CallInfo(batch=x.shape[0], fingerprint=fingerprint, geometry=geometry,
                        full_flops=full, cached_flops=cached, grid=grid)

    @classmethod
    def run_block(cls, kind, index, args, extra, plan, inner=None):
        dm = plan.model
        if kind == "double_block":
            return run_double_block(plan, index, dm.double_blocks[index], args, extra, inner,
                                    is_last=index == len(dm.double_blocks) - 1)
        return run_single_block(plan, index, dm.single_blocks[index], args, extra, inner)
