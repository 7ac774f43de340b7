"""Running the model families of ``nodes.families`` with ClusCa: one :class:`~.base.Adapter` per family
description, built from the shared code here (block runs, layout self-check, call description, cost)."""

from __future__ import annotations

from typing import Optional

from ..families import FAMILIES
from .base import Adapter

ADAPTERS: dict[str, Adapter] = {f.key: Adapter(f) for f in FAMILIES}


def find_adapter(diffusion_model) -> tuple[Optional[Adapter], str]:
    """The adapter for this diffusion model, or (None, a reason a user can read)."""
    reasons = []
    for adapter in ADAPTERS.values():
        ok, reason = adapter.probe(diffusion_model)
        if ok:
            return adapter, ""
        if reason and not reason.startswith(("a ", "an ", "not ")):
            reasons.append(reason)
    name = type(diffusion_model).__module__ + "." + type(diffusion_model).__name__
    supported = ", ".join(dict.fromkeys(a.family for a in ADAPTERS.values()))
    return None, (reasons[0] if reasons else f"{name} is not a model family ClusCa supports (supported: {supported})")


def get_adapter(key: str) -> Adapter:
    return ADAPTERS[key]
