"""The generic block forecast: ClusCa's schedule for models without a family description.

With no knowledge of a block's inside, each block is one function of its streams: at full steps ComfyUI's
block runs unchanged and the update it makes to every stream it returns (``output - input``, per stream) is
recorded as Taylor factors; on cached steps no block runs and each stream gets its forecast update. There are
no branches, no modulation, no clusters and no representative tokens (so no error probe either): this is
TaylorSeer at block granularity, for any model whose forward routes its blocks through
``patches_replace["dit"]``.

Which patch keys a model uses is found in two stages:

- when the node is applied (``detect``): the source of the model's classes (the diffusion model's and its
  submodules', ComfyUI code only) is searched for the block patch lookups of its forward
  (``("double_block", i) in blocks_replace``, ``blocks_replace[("block", idx)]``); for every key kind found,
  patches are installed for as many indices as the model's longest block list (``nn.ModuleList``) has. A key
  the forward never looks up is never called, so installing a few too many is harmless.
- at the first full call of every run (the self-check, ``end_call``): the patches the model actually called,
  and with what. Every block must hand over its streams as tensors under the same keys it returns, batch
  first, with their shapes preserved; every key is called once per model call; later calls must route the
  same blocks. A model that never calls the patches with the run's ``transformer_options`` (HunyuanDiT,
  Hunyuan3D 2.1 pass none to their block patches), or whose blocks break these rules, runs unchanged for the
  rest of the run, with one log line saying why.

The per-call plan is made in an ``APPLY_MODEL`` wrapper (one level above the diffusion model): many of these
models' forwards call no ``DIFFUSION_MODEL`` wrapper.
"""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from typing import Optional

import torch

from .base import CallInfo, call_block

log = logging.getLogger("ClusCa")

METHOD = "generic block forecast"
KEY_PREFIX = "generic:"
#: plan.extras key: the block patch keys called during this model call, in order
CALLS = "generic_calls"

_LOOKUP = re.compile(r"""\(\s*["'](\w+)["']\s*,\s*\w+\s*\)\s*(?:not\s+)?in\s+\w+"""
                     r"""|\w+\s*\[\s*\(\s*["'](\w+)["']\s*,\s*\w+\s*\)\s*\]""")
_DIT = re.compile(r"""patches_replace.*["']dit["']|["']dit["'].*patches_replace""", re.S)


def _class_source(cls) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def patch_kinds(diffusion_model) -> tuple:
    """The ``patches_replace["dit"]`` key kinds the model's code looks up per block, in order of appearance."""
    kinds: list = []
    seen: set = set()
    for module in diffusion_model.modules():
        for cls in type(module).__mro__:
            if cls in seen or not cls.__module__.startswith("comfy."):
                continue
            seen.add(cls)
            src = _class_source(cls)
            if "patches_replace" not in src or not _DIT.search(src):
                continue
            for m in _LOOKUP.finditer(src):
                kind = m.group(1) or m.group(2)
                if kind not in kinds:
                    kinds.append(kind)
    return tuple(kinds)


def longest_block_list(diffusion_model) -> int:
    return max((len(m) for m in diffusion_model.modules() if isinstance(m, torch.nn.ModuleList)), default=0)


#: per diffusion model: the block patch keys its last checked full call routed through ClusCa, in order
_ROUTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: per run (RunState): {"layout": {key: (streams, keys returned as None)}, "routed": keys of the first full call}
_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: model classes whose "never routes its blocks" message was logged already (said once per process)
_TOLD: set = set()


def _routed_text(keys) -> str:
    counts: dict = {}
    for kind, _ in keys:
        counts[kind] = counts.get(kind, 0) + 1
    return " + ".join(f"{n} {kind}" for kind, n in counts.items())


class GenericAdapter:
    """The generic block forecast for one diffusion model class (see the module docstring)."""

    method = METHOD
    #: the plan of a model call is made around ``BaseModel.apply_model`` (see nodes.patching)
    call_wrapper = "apply_model"
    reference_settings: dict = {}
    presets: dict = {}

    def __init__(self, model_class, kinds: tuple, name: Optional[str] = None):
        self.model_class = model_class
        self.family = name or model_class.__name__
        self.key = f"{KEY_PREFIX}{model_class.__module__}.{model_class.__qualname__}:{self.family}"
        self.block_kinds = tuple(kinds)

    # -- when the node is applied -------------------------------------------------------------------
    def block_count(self, diffusion_model, kind: str) -> int:
        """Patches to install per kind: as many as the longest block list (the calls say which are used)."""
        return longest_block_list(diffusion_model) if kind in self.block_kinds else 0

    def adjust_config(self, config):
        """Settings that need what the generic forecast does not have fall back, with a log line."""
        changes, said = {}, []
        if config.adaptive_threshold > 0 or config.target_speedup > 0:
            # the speed-up asked for becomes the interval of the fixed schedule (about steps / speed-up full steps)
            interval = max(2, round(config.target_speedup)) if config.target_speedup > 0 else config.fresh_interval
            changes.update(adaptive_threshold=0.0, target_speedup=0.0, fresh_interval=interval)
            said.append("the error-adaptive schedule needs the representatives' probe, which the generic block "
                        f"forecast does not have: the fixed schedule runs (a full step every {interval})")
        if config.memory_mode == "lite":
            changes["memory_mode"] = "full"
            said.append("memory_mode lite is not available with the generic block forecast; every block's update "
                        "is cached (one tensor per stream and Taylor order)")
        for line in said:
            log.info("ClusCa - %s (%s): %s.", self.family, METHOD, line)
        return config.with_changes(**changes) if changes else config

    # -- per model call -------------------------------------------------------------------------------
    def describe_call(self, diffusion_model, bound: dict, config) -> "CallInfo | str":
        tensors = {k: v for k, v in bound.items() if isinstance(v, torch.Tensor)}
        x = bound.get("x")
        if not isinstance(x, torch.Tensor):
            x = next(iter(tensors.values()), None)
        if x is None or x.ndim < 2:
            return "unexpected input layout (no batched latent)"
        # every input's shape is part of the cache key: a different text length or latent size starts over
        fingerprint = tuple((k, tuple(v.shape[1:]), str(v.dtype)) for k, v in sorted(tensors.items())) + \
            (str(x.device),)
        geometry = {"latent": "x".join(str(d) for d in x.shape[1:])}
        routed = _ROUTED.get(diffusion_model)
        if routed:
            geometry["blocks"] = _routed_text(routed)
        # cost in units of one full evaluation of the block stack: a cached step runs no block at all
        return CallInfo(batch=x.shape[0], fingerprint=fingerprint, geometry=geometry, full_flops=1.0,
                        cached_flops=0.0)

    def run_block(self, kind: str, index: int, args: dict, extra: dict, plan, inner=None) -> dict:
        key = (kind, index)
        plan.extras.setdefault(CALLS, []).append(key)
        state = _run_state(plan.run)
        if plan.full:
            return self._run_full(key, args, extra, plan, inner, state)
        layout = state["layout"].get(key)
        if layout is None:
            raise RuntimeError(f"{kind} {index} did not run at the last full step")
        streams, nones = layout
        out = {}
        for name in streams:
            x = args[name]
            value = plan.add_forecast(x, None, ("generic", kind, index, name))
            if value.dtype == torch.float16:
                value = torch.nan_to_num(value, nan=0.0, posinf=65504, neginf=-65504)
            out[name] = value
        for name in nones:
            out[name] = None
        return out

    def _run_full(self, key, args, extra, plan, inner, state) -> dict:
        rows = plan.rows * len(plan.slots)
        layout = state["layout"].get(key)
        # the streams' inputs are kept (blocks may update them in place); before the first full call of a
        # block every batched tensor argument is a candidate
        names = layout[0] if layout is not None else [
            k for k, v in args.items() if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] == rows]
        saved = {k: args[k].clone() for k in names if isinstance(args.get(k), torch.Tensor)}
        out = call_block(args, extra, inner)
        where = f"{key[0]} {key[1]}"
        with plan.guard(where):
            found = _layout(out, saved)
            if isinstance(found, str):
                plan.abandon(f"{where}: {found} ({METHOD} self-check)")
                return out
            if layout is not None and found != layout:
                plan.abandon(f"{where} returned other streams than at the first full step ({METHOD} self-check)")
                return out
            state["layout"][key] = found
            for name in found[0]:
                plan.record(("generic", key[0], key[1], name), out[name] - saved[name])
        return out

    def end_call(self, plan) -> None:
        """The self-check of the routing, after every model call ClusCa planned."""
        if plan.failed or plan.passive:
            return
        run = plan.run
        calls = plan.extras.get(CALLS) or []
        with run.lock:
            state = _run_state(run)
            if not calls:
                if plan.full and state["routed"] is None:
                    reason = (f"{self.family} did not route its blocks through ClusCa's block patches with this "
                              "run's transformer_options (its forward calls them without it, or not at all)")
                    run.disabled = reason
                    if self.key not in _TOLD:
                        _TOLD.add(self.key)
                        log.warning("ClusCa - %s; the model runs unchanged (no speed-up).", reason)
                return
            repeated = sorted({k for k in calls if calls.count(k) > 1})
            if repeated:
                plan.abandon(f"the model called the block patch {repeated[0][0]} {repeated[0][1]} more than once in "
                             f"one evaluation ({METHOD} self-check)")
                return
            routed = state["routed"]
            if routed is None:
                state["routed"] = tuple(calls)
                _ROUTED[plan.model] = tuple(calls)
                log.info("ClusCa - %s: %s over %s blocks routed through ClusCa's patches", self.family, METHOD,
                         _routed_text(calls))
            elif set(calls) != set(routed):
                missing = sorted(set(routed) - set(calls)) or sorted(set(calls) - set(routed))
                plan.abandon(f"the model routed other blocks than at its first full step (e.g. {missing[0][0]} "
                             f"{missing[0][1]}) ({METHOD} self-check)")

    def run_lite_block(self, kind, index, args, extra, plan, inner=None):   # lite falls back (adjust_config)
        return self.run_block(kind, index, args, extra, plan, inner)


def _run_state(run) -> dict:
    state = _RUNS.get(run)
    if state is None:
        state = {"layout": {}, "routed": None}
        _RUNS[run] = state
    return state


def _layout(out, saved: dict):
    """(streams, keys returned as None) of a block's output, or why it is not one the forecast can take: a dict
    whose tensors are same-named batch-first tensor inputs (``saved``), updated with their shapes preserved."""
    if not isinstance(out, dict):
        return f"the block patch returns {type(out).__name__}, not a dict of streams"
    streams, nones = [], []
    for name, value in out.items():
        if value is None:
            nones.append(name)
            continue
        if not isinstance(value, torch.Tensor):
            return f"its output {name!r} is a {type(value).__name__}, not a tensor"
        if name not in saved:
            return f"its output {name!r} is not one of its batched tensor inputs"
        if value.shape != saved[name].shape:
            return f"its output {name!r} has shape {tuple(value.shape)}, its input {tuple(saved[name].shape)}"
        streams.append(name)
    if not streams:
        return "it returns no stream"
    return tuple(streams), tuple(nones)


_ADAPTERS: dict = {}


def detect(diffusion_model, name: Optional[str] = None) -> tuple[Optional[GenericAdapter], str]:
    """The generic adapter for this model (``name``: what users see), or (None, why not)."""
    cls = type(diffusion_model)
    kinds = patch_kinds(diffusion_model)
    if not kinds:
        return None, ""
    if longest_block_list(diffusion_model) == 0:
        return None, f"{cls.__name__} has no block list"
    adapter = GenericAdapter(cls, kinds, name)
    _ADAPTERS[adapter.key] = adapter
    return adapter, ""


def get(key: str) -> GenericAdapter:
    return _ADAPTERS[key]
