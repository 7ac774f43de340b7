"""Model-family adapters: everything ClusCa knows about a model family's layout lives in its adapter.

An adapter says whether a diffusion model is one it handles, which blocks it patches, how to describe a
model call (token counts, a fingerprint, FLOPs), and how one block runs on a full step (ComfyUI's own
block, with its branch outputs captured) and on a cached step (built from the block's own submodules).
"""

from __future__ import annotations

from typing import Optional

from .base import Adapter
from .dit import DiTAdapter
from .flux import FluxAdapter
from .hunyuan_video import HunyuanVideoAdapter

ADAPTERS: dict[str, type[Adapter]] = {a.key: a for a in (FluxAdapter, HunyuanVideoAdapter, DiTAdapter)}


def find_adapter(diffusion_model) -> tuple[Optional[type[Adapter]], str]:
    """The adapter for this diffusion model, or (None, a reason a user can read)."""
    reasons = []
    for adapter in ADAPTERS.values():
        ok, reason = adapter.probe(diffusion_model)
        if ok:
            return adapter, ""
        if reason:
            reasons.append(reason)
    name = type(diffusion_model).__module__ + "." + type(diffusion_model).__name__
    supported = ", ".join(a.family for a in ADAPTERS.values())
    return None, (reasons[0] if reasons else f"{name} is not a model family ClusCa supports (supported: {supported})")


def get_adapter(key: str) -> type[Adapter]:
    return ADAPTERS[key]
