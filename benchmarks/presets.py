"""Mid-size random-weight architectures per model family, for the speed benchmark (CPU geometry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Preset:
    """One benchmark subject: how to build the model, its conditionings and latent, and how to sample it."""
    family: str
    description: str
    build: Callable[[], object]               # -> ModelPatcher
    conds: Callable[[], tuple]                # -> (positive, negative)
    latent: Callable[[], object]              # -> latent tensor
    steps: int = 50
    cfg: float = 1.0
    sampler: str = "euler"
    scheduler: str = "simple"
    node_inputs: dict = field(default_factory=dict)


def flux_preset() -> Preset:
    import torch
    from devkit.tiny_models import flux_cond, tiny_flux
    return Preset(
        family="flux",
        description="FLUX architecture, hidden 512, 8 heads, 4 double + 8 single blocks, 1024 image + 256 text "
                    "tokens, CFG 1 (guidance-distilled), random weights",
        build=lambda: tiny_flux(0, hidden=512, heads=8, depth=4, single=8, context_dim=512, vec_dim=64),
        conds=lambda: (flux_cond(1, tokens=256, context_dim=512, vec_dim=64),) * 2,
        latent=lambda: torch.zeros(1, 16, 64, 64),
    )


def hunyuan_video_preset() -> Preset:
    import torch
    from devkit.tiny_models import hunyuan_video_cond, tiny_hunyuan_video
    return Preset(
        family="hunyuan_video",
        description="HunyuanVideo architecture, hidden 512, 8 heads, 4 double + 8 single blocks, 5 latent frames "
                    "of 16x16 tokens (1280 image tokens) + 128 text tokens, embedded guidance, CFG 1, random weights; "
                    "node defaults = the reference video settings (interval 5, warm-up 1, 32 clusters, gamma 0.01)",
        build=lambda: tiny_hunyuan_video(0, hidden=512, heads=8, depth=4, single=8, context_dim=512, vec_dim=64),
        conds=lambda: (hunyuan_video_cond(1, tokens=128, context_dim=512, vec_dim=64),) * 2,
        latent=lambda: torch.zeros(1, 16, 5, 32, 32),
    )


def dit_preset() -> Preset:
    import torch
    from devkit.tiny_dit import dit_cond, null_cond, tiny_dit
    return Preset(
        family="dit",
        description="class-conditional DiT, DiT-S/2 architecture (hidden 384, 6 heads, depth 12, patch 2), 32x32 "
                    "latent = 256 image tokens (256 px), CFG 4 against the null class, random weights; node "
                    "defaults = the DiT reference settings (interval 4, warm-up 2, Taylor order 4)",
        build=lambda: tiny_dit(0, hidden=384, heads=6, depth=12, patch=2, input_size=32),
        conds=lambda: (dit_cond(207), null_cond()),
        latent=lambda: torch.zeros(1, 4, 32, 32),
        cfg=4.0,
    )


PRESETS: dict[str, Callable[[], Preset]] = {"flux": flux_preset, "hunyuan_video": hunyuan_video_preset,
                                            "dit": dit_preset}
