"""HunyuanVideo 1.0 / 1.5 and HunyuanImage 2.1 (one class, ``comfy.ldm.hunyuan_video.model.HunyuanVideo``), on
the blocks of ``flux_layers``. The text stream holds the refined text tokens plus byT5 glyph and vision tokens
when present; a ``ref_latent`` is prepended to the image tokens (its own clustering segment per frame);
image-to-video token replacement (``guiding_frame_index``: frame 0 modulated with another timestep, token by
token) runs in full. Clustering per latent frame gives every frame its own clusters.
"""

from __future__ import annotations

import math

from ..adapters.spec import CallTokens, Family
from .flux_layers import DOUBLE, SINGLE


def _grid(latent, patch) -> tuple:
    """(frames, rows, columns) of tokens of a latent (B, C, [T,] H, W); PatchEmbed pads to the patch size."""
    grid = tuple(math.ceil(d / p) for d, p in zip(latent.shape[2:], patch))
    return grid if len(grid) == 3 else (1,) + grid


def tokens(dm, bound: dict, config):
    x, context = bound.get("x"), bound.get("context")
    patch = list(dm.patch_size)
    if x is None or context is None or x.ndim != 2 + len(patch) or context.ndim != 3:
        return "unexpected input layout"
    if bound.get("guiding_frame_index") is not None:
        return "image-to-video token replacement (per-token modulation) is computed in full"
    ref = bound.get("ref_latent")
    n_ref = 0
    if ref is not None:
        f, r, c = _grid(ref, patch)
        n_ref = f * r * c
    n_txt = context.shape[1]
    byt5 = bound.get("txt_byt5")
    if byt5 is not None and getattr(dm, "byt5_in", None) is not None:
        n_txt += byt5.shape[1]
    clip = bound.get("clip_fea")
    if clip is not None and getattr(dm, "vision_in", None) is not None:
        n_txt += clip.shape[1]
    return CallTokens(batch=x.shape[0], grid=_grid(x, patch), text=n_txt, reference=n_ref, reference_first=True,
                      fingerprint=(None if ref is None else tuple(ref.shape[1:]),))


HUNYUAN_VIDEO = Family(
    key="hunyuan_video", name="HunyuanVideo", model_class="comfy.ldm.hunyuan_video.model:HunyuanVideo",
    block_kinds=(DOUBLE, SINGLE), tokens=tokens,
    # the reference scripts' video settings (sample.sh / vbench.sh): interval 5, warm-up 1, order 1, K=32, γ=0.01
    reference_settings={"fresh_interval": 5, "warmup_steps": 1, "taylor_order": 1, "clusters": 32,
                        "propagation_ratio": 0.01},
    notes="1.0, 1.5, I2V, HunyuanImage 2.1; image-to-video token replacement runs in full")
