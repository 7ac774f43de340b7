"""Running the model families of ``nodes.families`` with ClusCa: one :class:`~.base.Adapter` per family
description, built from the shared code here (block runs, layout self-check, call description, cost). A model
no family describes, but whose forward routes its blocks through ``patches_replace["dit"]``, gets the generic
block forecast (``generic.py``)."""

from __future__ import annotations

from typing import Optional

from ..families import FAMILIES
from . import generic
from .base import Adapter

ADAPTERS: dict[str, Adapter] = {f.key: Adapter(f) for f in FAMILIES}


def find_adapter(diffusion_model, name: Optional[str] = None) -> tuple[Optional[Adapter], str]:
    """The adapter for this diffusion model, or (None, a reason a user can read). A family that describes the
    model's class decides (a model it refuses passes through with its reason); a class no family describes
    gets the generic block forecast when its forward routes blocks through ComfyUI's block patches (``name``:
    what users see for it, e.g. ComfyUI's model class "SD3"; default the diffusion model's class name)."""
    reasons = []
    claimed = False
    for adapter in ADAPTERS.values():
        ok, reason = adapter.probe(diffusion_model)
        if ok:
            return adapter, ""
        claimed = claimed or adapter.spec.resolve_class() is type(diffusion_model)
        if reason and not reason.startswith(("a ", "an ", "not ")):
            reasons.append(reason)
    if not claimed:
        adapter, reason = generic.detect(diffusion_model, name)
        if adapter is not None:
            return adapter, ""
        if reason:
            reasons.append(reason)
    name = type(diffusion_model).__module__ + "." + type(diffusion_model).__name__
    supported = ", ".join(dict.fromkeys(a.family for a in ADAPTERS.values() if a.block_kinds))
    return None, (reasons[0] if reasons else f"{name} is not a model family ClusCa supports (supported: {supported}; "
                  "other models need a forward that routes its blocks through ComfyUI's block patches)")


def get_adapter(key: str) -> Adapter:
    if key.startswith(generic.KEY_PREFIX):
        return generic.get(key)
    return ADAPTERS[key]
