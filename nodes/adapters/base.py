"""The adapter interface, and helpers shared by adapters."""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Hashable, Optional

import torch


@dataclass
class CallInfo:
    """What an adapter tells the wrappers about one model call."""
    batch: int
    fingerprint: Hashable
    geometry: dict = field(default_factory=dict)
    full_flops: float = 0.0     # per batch row, one full evaluation of the block stack
    cached_flops: float = 0.0   # per batch row, one cached evaluation
    grid: Optional[tuple] = None  # (frames, rows, columns) of the image tokens, for cluster maps
    #: adapter-specific values the blocks of this call need (``plan.extras``), e.g. clustering segments;
    #: ``image_token_offset`` = where the target image tokens start in the image stream (cluster maps)
    extras: dict = field(default_factory=dict)


def adaptive_presets(quality: float, balanced: float, fast: float, mode: str = "clusca") -> dict:
    """quality / balanced / fast as error-adaptive schedules: the thresholds are measured per family on its
    reference model (``python -m benchmarks.suite --part fidelity``); mode and ceiling are shared."""
    return {name: {"mode": mode, "adaptive_threshold": threshold, "target_speedup": 0.0}
            for name, threshold in (("quality", quality), ("balanced", balanced), ("fast", fast))}


class Adapter:
    """Base class; subclasses are used as classes (no instances, no state)."""

    key = "base"
    family = "base"
    #: block kinds patched through ``patches_replace["dit"]``, in forward order
    block_kinds: tuple[str, ...] = ()
    #: the reference code's settings for this family, used when the node is left at its defaults
    reference_settings: dict = {}
    #: named presets (quality / balanced / fast): settings measured on the family's reference model
    #: (docs/benchmarks.md), applied on top of ``reference_settings``
    presets: dict = {}

    @classmethod
    def probe(cls, diffusion_model) -> tuple[bool, str]:
        raise NotImplementedError

    @classmethod
    def block_count(cls, diffusion_model, kind: str) -> int:
        raise NotImplementedError

    @classmethod
    def describe_call(cls, diffusion_model, bound: dict, config) -> "CallInfo | str":
        """CallInfo, or a reason (str) to run this call untouched."""
        raise NotImplementedError

    @classmethod
    def run_block(cls, kind: str, index: int, args: dict, extra: dict, plan, inner=None) -> dict:
        raise NotImplementedError

    @classmethod
    def block_outputs(cls, kind: str) -> tuple[str, ...]:
        """The keys a block patch of this kind returns."""
        return ("img", "txt") if kind == "double_block" else ("img",)

    @classmethod
    def last_block(cls, diffusion_model) -> tuple[str, int]:
        """The block whose output is the output of the whole block stack (for the lite memory mode)."""
        for kind in reversed(cls.block_kinds):
            n = cls.block_count(diffusion_model, kind)
            if n:
                return kind, n - 1
        raise ValueError("model has no blocks")

    @classmethod
    def run_lite_block(cls, kind: str, index: int, args: dict, extra: dict, plan, inner=None) -> dict:
        """Lite memory mode (TaylorSeer-Lite): only the block stack's output is cached. Full steps run every
        block and record the last block's output; cached steps pass the stream through every block untouched
        and the last block returns the forecast of the stack's output (no block computation at all)."""
        last = (kind, index) == cls.last_block(plan.model)
        if plan.full:
            out = call_block(args, extra, inner)
            if last:
                with plan.guard("lite cache"):
                    plan.record(LITE_KEY, out["img"])
            return out
        if not last:
            return {k: args[k] for k in cls.block_outputs(kind)}
        return {"img": plan.predict(LITE_KEY).to(args["img"].dtype)}


#: the single cached branch of the lite memory mode
LITE_KEY = ("lite", "stack_output")


def call_block(args: dict, extra: dict, inner=None) -> dict:
    """Run the block as ComfyUI (or a block patch that was installed before ours) would."""
    if inner is not None:
        return inner(args, extra)
    return extra["original_block"](args)


_SIGNATURES: dict[type, inspect.Signature] = {}


def bind_forward_args(module, args: tuple, kwargs: dict) -> Optional[dict]:
    """Name the arguments a DIFFUSION_MODEL wrapper received, using the model's own ``_forward`` signature
    (read at run time, so positional parameters inserted by newer ComfyUI versions are handled)."""
    cls = type(module)
    sig = _SIGNATURES.get(cls)
    if sig is None:
        fn = getattr(cls, "_forward", None) or getattr(cls, "forward")
        sig = inspect.signature(fn)
        _SIGNATURES[cls] = sig
    try:
        bound = sig.bind(module, *args, **kwargs)
    except TypeError:
        return None
    out = dict(bound.arguments)
    out.pop("self", None)
    extra = out.pop("kwargs", None)
    if isinstance(extra, dict):
        for k, v in extra.items():
            out.setdefault(k, v)
    return out


@contextmanager
def capture_outputs(modules: dict, inputs_of: tuple = ()):
    """Record the output of each named submodule while the block inside the ``with`` runs; for the names in
    ``inputs_of`` also its first input, under ``name + ":input"``."""
    store: dict = {}
    handles = []

    def make_hook(name):
        def hook(_module, inputs, output):
            store[name] = output.detach() if isinstance(output, torch.Tensor) else output
            if name in inputs_of and inputs and isinstance(inputs[0], torch.Tensor):
                store[name + ":input"] = inputs[0].detach()
        return hook

    try:
        for name, mod in modules.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def close_enough(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same values up to rounding of the dtype (used by the adapters' layout self-check)."""
    if a.shape != b.shape:
        return False
    tol = {torch.float32: 1e-4, torch.float64: 1e-8}.get(b.dtype, 3e-2)
    scale = float(b.detach().abs().max()) + 1e-6
    return float((a.detach().float() - b.detach().float()).abs().max()) <= tol * scale
