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


def submodule(block, path: str):
    """The submodule at a dotted path (``"img_attn.proj"``, ``"ffn.2"``) of a block."""
    m = block
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() and isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)) \
            else getattr(m, part)
    return m


def has_submodule(block, path: str) -> bool:
    try:
        return isinstance(submodule(block, path), torch.nn.Module)
    except (AttributeError, IndexError, TypeError):
        return False


class Adapter:
    """A model family's adapter: its description (``spec.Family``) and the shared code that runs it."""

    #: how the run summary names the method (the generic adapter says "generic block forecast")
    method = "ClusCa"
    #: where the plan of a model call is made: the diffusion model's DIFFUSION_MODEL wrapper
    call_wrapper = "diffusion_model"

    def __init__(self, spec):
        self.spec = spec
        self.key = spec.key
        #: the name users see (logs, summary, node panel)
        self.family = spec.name
        self.kinds = {k.key: k for k in spec.block_kinds}
        #: block kinds, in forward order (patched through ``patches_replace["dit"]``, or ``spec.ForwardPatch``)
        self.block_kinds = tuple(self.kinds)
        self.reference_settings = dict(spec.reference_settings)

    @property
    def presets(self) -> dict:
        from ..presets import presets_for
        return presets_for(self.key)

    def probe(self, diffusion_model) -> tuple[bool, str]:
        cls = self.spec.resolve_class()
        if cls is None or type(diffusion_model) is not cls:
            return False, ""
        reason = self.spec.refuse(diffusion_model)
        if reason:
            return False, reason
        for kind in self.spec.block_kinds:
            blocks = self.blocks(diffusion_model, kind.key)
            if blocks is None:
                return False, f"this {self.family} model has no {kind.blocks}"
            for block in blocks:
                paths = [b.module for s in kind.streams for b in s.branches]
                paths += [p for s in kind.streams for b in s.branches if b.mlp
                          for p in (b.mlp.norm, b.mlp.mlp, b.mlp.post_norm) if isinstance(p, str)]
                missing = [p for p in paths if not has_submodule(block, p)]
                if kind.forward_patch is not None:
                    params = inspect.signature(type(block).forward).parameters
                    missing += [f"forward argument {a}" for a, _ in kind.forward_patch.rename if a not in params]
                if missing:
                    return False, (f"this {self.family} model's blocks do not have the layout ClusCa knows "
                                   f"(no {', '.join(missing)})")
        if not self.blocks(diffusion_model, self.spec.block_kinds[0].key):
            return False, f"this {self.family} model has no blocks"
        return True, ""

    def blocks(self, diffusion_model, kind: str):
        try:
            return submodule(diffusion_model, self.kinds[kind].blocks)
        except AttributeError:
            return None

    def block_count(self, diffusion_model, kind: str) -> int:
        return len(self.blocks(diffusion_model, kind) or ())

    def describe_call(self, diffusion_model, bound: dict, config) -> "CallInfo | str":
        """CallInfo, or a reason (str) to run this call untouched."""
        from .calls import describe_call
        return describe_call(self, diffusion_model, bound, config)

    def run_block(self, kind: str, index: int, args: dict, extra: dict, plan, inner=None) -> dict:
        from .runner import run_block
        spec = self.kinds[kind]
        blocks = self.blocks(plan.model, kind)
        return run_block(self.spec.block_kinds, spec, index, blocks[index], args, extra, plan, inner, len(blocks))

    def adjust_config(self, config):
        """The settings this adapter runs with (the generic adapter changes some, with a log line)."""
        return config

    def end_call(self, plan) -> None:
        """Called after every model call ClusCa planned (the generic adapter's routing self-check)."""

    def block_outputs(self, kind: str) -> tuple[str, ...]:
        """The keys a block patch of this kind returns."""
        return tuple(s.name for s in self.kinds[kind].streams)

    def last_block(self, diffusion_model) -> tuple[str, int]:
        """The block whose output is the output of the whole block stack (for the lite memory mode)."""
        for kind in reversed(self.block_kinds):
            n = self.block_count(diffusion_model, kind)
            if n:
                return kind, n - 1
        raise ValueError("model has no blocks")

    def run_lite_block(self, kind: str, index: int, args: dict, extra: dict, plan, inner=None) -> dict:
        """Lite memory mode (TaylorSeer-Lite): only the block stack's output is cached. Full steps run every
        block and record the last block's output; cached steps pass the stream through every block untouched
        and the last block returns the forecast of the stack's output (no block computation at all)."""
        last = (kind, index) == self.last_block(plan.model)
        if plan.full:
            out = call_block(args, extra, inner)
            if last:
                with plan.guard("lite cache"):
                    plan.record(LITE_KEY, out["img"])
            return out
        out = {k: args[k] for k in self.block_outputs(kind)}
        if last:
            out["img"] = plan.predict(LITE_KEY).to(args["img"].dtype)
        return out


#: the single cached branch of the lite memory mode
LITE_KEY = ("lite", "stack_output")


def call_block(args: dict, extra: dict, inner=None) -> dict:
    """Run the block as ComfyUI (or a block patch that was installed before ours) would."""
    if inner is not None:
        return inner(args, extra)
    return extra["original_block"](args)


_SIGNATURES: dict[tuple, inspect.Signature] = {}


def bind_forward_args(module, args: tuple, kwargs: dict, method: Optional[str] = None) -> Optional[dict]:
    """Name the arguments a DIFFUSION_MODEL wrapper received, using the model's own ``_forward`` signature
    (read at run time, so positional parameters inserted by newer ComfyUI versions are handled); ``method``
    names another method whose signature applies (``"_apply_model"`` for an APPLY_MODEL wrapper)."""
    cls = type(module)
    sig = _SIGNATURES.get((cls, method))
    if sig is None:
        fn = getattr(cls, method) if method else (getattr(cls, "_forward", None) or getattr(cls, "forward"))
        sig = inspect.signature(fn)
        _SIGNATURES[(cls, method)] = sig
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
def capture_outputs(modules: dict, inputs_of: tuple = (), copy: bool = False):
    """Record the output of each named submodule while the block inside the ``with`` runs; for the names in
    ``inputs_of`` also its first input, under ``name + ":input"``. ``copy``: record copies of the outputs, for
    blocks that go on to change them in place (e.g. FLUX's per-token-range gates, ``apply_mod`` with
    ``modulation_dims``)."""
    store: dict = {}
    handles = []

    def make_hook(name):
        def hook(_module, inputs, output):
            if isinstance(output, torch.Tensor):
                output = output.detach().clone() if copy else output.detach()
            store[name] = output
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
