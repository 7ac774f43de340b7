"""HunyuanVideo 1.0 / 1.5 (and HunyuanImage 2.1, same class) as ComfyUI builds them:
``comfy.ldm.hunyuan_video.model.HunyuanVideo``.

Layout: FLUX-style double and single blocks; the joint sequence of the single blocks is ``cat(img, txt)`` in
older ComfyUI versions (0.3.75) and ``cat(txt, img)`` in newer ones (0.33), found from what the model computes
(see ``flux_blocks``); the text stream holds the refined text tokens plus byT5 and vision tokens when present. A ``ref_latent`` is prepended to the image tokens: it is cached, clustered
(as its own segment when clustering per frame) and refreshed like the other image tokens. I2V token
replacement (``guiding_frame_index``) modulates frame 0 with another timestep token by token; such calls are
computed in full. Clustering per latent frame (``cluster_per_frame``) gives ``clusters`` clusters to every
frame, for any frame count.
"""

from __future__ import annotations

import math

from .base import Adapter, CallInfo, adaptive_presets
from .flux_blocks import double_layout_ok, flux_style_flops, run_double_block, run_single_block, single_layout_ok


def _token_grid(latent, patch) -> tuple:
    """(frames, rows, columns) of tokens for a latent (B, C, [T,] H, W); PatchEmbed pads to the patch size."""
    dims = latent.shape[2:]
    grid = tuple(math.ceil(d / p) for d, p in zip(dims, patch))
    return grid if len(grid) == 3 else (1,) + grid


class HunyuanVideoAdapter(Adapter):
    key = "hunyuan_video"
    family = "HunyuanVideo"
    block_kinds = ("double_block", "single_block")
    # The reference scripts' video settings (sample.sh / vbench.sh): interval 5, warm-up 1, order 1, K=32, γ=0.01.
    reference_settings = {"fresh_interval": 5, "warmup_steps": 1, "taylor_order": 1, "clusters": 32,
                          "propagation_ratio": 0.01}
    #: measured on the reference model: docs/benchmarks.md, "Presets"
    presets = adaptive_presets(0.03, 0.05, 0.08)

    @classmethod
    def probe(cls, diffusion_model) -> tuple[bool, str]:
        try:
            from comfy.ldm.hunyuan_video.model import HunyuanVideo
        except ImportError:
            return False, ""
        if type(diffusion_model) is not HunyuanVideo:
            return False, ""
        doubles = getattr(diffusion_model, "double_blocks", None)
        singles = getattr(diffusion_model, "single_blocks", None)
        if not doubles or singles is None:
            return False, "this HunyuanVideo model has no double-stream blocks"
        if not all(double_layout_ok(b) for b in doubles) or not all(single_layout_ok(b) for b in singles):
            return False, "this HunyuanVideo model's blocks do not have the layout ClusCa knows"
        return True, ""

    @classmethod
    def block_count(cls, diffusion_model, kind: str) -> int:
        return len(diffusion_model.double_blocks) if kind == "double_block" else len(diffusion_model.single_blocks)

    @classmethod
    def segments(cls, grid: tuple, n_ref: int) -> list:
        """Token segments clustered separately per frame: the reference latent's tokens, then each frame."""
        frames, rows, cols = grid
        return ([n_ref] if n_ref else []) + [rows * cols] * frames

    @classmethod
    def describe_call(cls, diffusion_model, bound: dict, config):
        x, context = bound.get("x"), bound.get("context")
        patch = list(diffusion_model.patch_size)
        if x is None or context is None or x.ndim != 2 + len(patch) or context.ndim != 3:
            return "unexpected input layout"
        if bound.get("guiding_frame_index") is not None:
            return "image-to-video token replacement (per-token modulation) is computed in full"
        grid = _token_grid(x, patch)
        n_img = grid[0] * grid[1] * grid[2]
        ref = bound.get("ref_latent")
        n_ref = 0
        if ref is not None:
            rg = _token_grid(ref, patch)
            n_ref = rg[0] * rg[1] * rg[2]
        n_txt = context.shape[1]
        byt5 = bound.get("txt_byt5")
        if byt5 is not None and getattr(diffusion_model, "byt5_in", None) is not None:
            n_txt += byt5.shape[1]
        clip = bound.get("clip_fea")
        if clip is not None and getattr(diffusion_model, "vision_in", None) is not None:
            n_txt += clip.shape[1]
        k = config.clusters
        if config.cluster_per_frame:
            k_img = sum(min(k, s) for s in cls.segments(grid, n_ref))
        else:
            k_img = min(k, n_img + n_ref)
        hidden = diffusion_model.hidden_size
        mlp_hidden = int(hidden * diffusion_model.params.mlp_ratio)
        nd, ns = len(diffusion_model.double_blocks), len(diffusion_model.single_blocks)
        full, cached = flux_style_flops(n_img + n_ref, n_txt, hidden, mlp_hidden, nd, ns, k_img, min(k, n_txt))
        geometry = {"blocks": f"{nd}+{ns}", "frames": grid[0], "image tokens": n_img, "text tokens": n_txt}
        if n_ref:
            geometry["reference tokens"] = n_ref
        fingerprint = (tuple(x.shape[1:]), n_txt, None if ref is None else tuple(ref.shape[1:]), x.dtype,
                       str(x.device))
        extras = {"segments": cls.segments(grid, n_ref) if config.cluster_per_frame else None,
                  "image_token_offset": n_ref}
        return CallInfo(batch=x.shape[0], fingerprint=fingerprint, geometry=geometry, full_flops=full,
                        cached_flops=cached, grid=grid, extras=extras)

    @classmethod
    def run_block(cls, kind, index, args, extra, plan, inner=None):
        dm = plan.model
        if kind == "double_block":
            return run_double_block(plan, index, dm.double_blocks[index], args, extra, inner,
                                    cluster_segments=plan.extras.get("segments"),
                                    is_last=index == len(dm.double_blocks) - 1)
        return run_single_block(plan, index, dm.single_blocks[index], args, extra, inner)
