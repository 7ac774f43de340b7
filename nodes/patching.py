"""Installing ClusCa on a ComfyUI model: keyed wrappers, per-block ``dit`` patches, the run lifecycle.

- ``OUTER_SAMPLE`` wrapper: per sampling run, a fresh holder clone with its own state (schedule from the
  run's sigmas), the summary line, and the release of every cached tensor in ``finally``.
- ``DIFFUSION_MODEL`` wrapper: per model call, the decision (full or cached) and the call's plan.
- ``patches_replace["dit"]`` entries, one per block: they hand the block to the family adapter while a plan
  is active, and call ComfyUI's block untouched otherwise (bypassed node, calls outside a sampler). Families
  whose model has no such patch point declare it (``spec.ForwardPatch``): their blocks get the same entry
  through an object patch on each block's ``forward`` (``forward_patch``).
"""

from __future__ import annotations

import logging
import time

import torch

import comfy.model_patcher
import comfy.patcher_extension

from ..clusca_core.config import ClusCaConfig
from .adapters import find_adapter, get_adapter
from .adapters.base import bind_forward_args
from .cluster_map import cluster_snapshot
from .forward_patch import install_forward_patches
from .holder import KEY, ClusCaHolder, summary_line
from .presets import error_prior_for
from .ui_stats import send_stats

log = logging.getLogger("ClusCa")
WrappersMP = comfy.patcher_extension.WrappersMP
CallbacksMP = comfy.patcher_extension.CallbacksMP

class ClusCaBlockPatch:
    """The ``patches_replace["dit"]`` entry of one block. Picklable/deep-copyable: it holds plain values."""

    def __init__(self, kind: str, index: int, inner=None):
        self.kind = kind
        self.index = index
        self.inner = inner   # a block patch another node installed before ours, kept and called on full steps

    def __call__(self, args: dict, extra: dict) -> dict:
        # Under torch.compile the block runs eagerly: graphs compiled earlier (e.g. for the same model
        # without ClusCa) would not call the forward hooks that capture the branch outputs.
        return _eager(self._run, args, extra)

    def _original(self, args: dict, extra: dict) -> dict:
        """The block as it would run without ClusCa (through another node's patch, if there was one)."""
        return self.inner(args, extra) if self.inner is not None else extra["original_block"](args)

    def _run(self, args: dict, extra: dict) -> dict:
        holder = (args.get("transformer_options") or {}).get(KEY)
        run = getattr(holder, "run", None)
        plan = run.current if run is not None else None
        if plan is None:
            return self._original(args, extra)
        plan.blocks_run += 1
        if plan.failed or plan.passive:
            return self._original(args, extra)
        adapter = plan.adapter
        run_block = adapter.run_lite_block if plan.config.memory_mode == "lite" else adapter.run_block
        if plan.full:
            return run_block(self.kind, self.index, args, extra, plan, self.inner)
        try:
            return run_block(self.kind, self.index, args, extra, plan, self.inner)
        except Exception as exc:  # noqa: BLE001 - fall back to the real block rather than break the run
            log.debug("ClusCa cached block failed", exc_info=True)
            plan.abandon(f"{self.kind} {self.index}: {type(exc).__name__}: {exc}")
            return self._original(args, extra)


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def _eager(fn, *args):
    """``fn(*args)``; while torch.compile traces, outside the graph (ClusCa's bookkeeping is Python state)."""
    return torch.compiler.disable(fn)(*args) if _is_compiling() else fn(*args)


def outer_sample_wrapper(executor, *args, **kwargs):
    """Give every sampling run its own ClusCa state, and free it whatever happens."""
    guider = executor.class_obj
    orig_model_options = guider.model_options
    template = holder = None
    started = None
    try:
        guider.model_options = comfy.model_patcher.create_model_options_clone(orig_model_options)
        to = guider.model_options.setdefault("transformer_options", {})
        template = to.get(KEY)
        if isinstance(template, ClusCaHolder):
            holder = template.clone()
            to[KEY] = holder
            try:
                _start_run(holder, guider, args[3] if len(args) > 3 else kwargs.get("sigmas"))
                started = time.perf_counter()
            except Exception as exc:  # noqa: BLE001 - without a run state every call simply runs in full
                log.warning("ClusCa - could not prepare this run (%s: %s); the model runs unchanged.",
                            type(exc).__name__, exc)
                holder.reset()
        return executor(*args, **kwargs)
    finally:
        if holder is not None and holder.run is not None:
            _finish_run(template, holder, None if started is None else time.perf_counter() - started)
        guider.model_options = orig_model_options


def _start_run(holder: ClusCaHolder, guider, sigmas) -> None:
    adapter = get_adapter(holder.family_key)
    run = holder.start_run(sigmas, guider.model_patcher.model.model_sampling, adapter.family,
                           error_prior=error_prior_for(adapter.key))
    if run is not None:
        c = holder.config
        log.info("ClusCa enabled - %s, mode %s, warm-up %d, order %d, %d clusters, gamma %g, window %.2f-%.2f: %s",
                 adapter.family, c.mode, c.warmup_steps, c.taylor_order, c.clusters, c.propagation_ratio,
                 c.start_percent, c.end_percent, run.schedule.describe())


def _finish_run(template: ClusCaHolder, holder: ClusCaHolder, seconds=None) -> None:
    """The run's end: its summary and clusters kept on the template (and its parents' cluster maps), the
    summary logged and sent to the page, then every cached tensor freed."""
    run = holder.run
    try:
        summary = run.summary()
        summary["sampling_seconds"] = seconds
        summary["node_id"] = holder.node_id
        summary["method"] = get_adapter(holder.family_key).method
        if run.disabled:
            summary["disabled"] = run.disabled
        template.publish(summary, holder.run_clusters)
        log.info(summary_line(summary))
        try:
            send_stats(template, summary)
        except Exception:  # noqa: BLE001 - a UI problem must not fail the run
            log.debug("ClusCa could not send the run statistics to the page", exc_info=True)
    finally:
        holder.reset()


def own_holder_on_clone(original, clone) -> None:
    """``ON_CLONE`` callback: a clone of a ClusCa model gets its own holder, a child of the original's (same
    settings, its own run results). ComfyUI 0.33's ``clone()`` copies ``transformer_options`` as plain dicts
    and lists, so without this every clone would share one holder, and with it the last run's summary and
    clusters (a cluster map could show another sampler's run); older versions deep-copy it."""
    source = (original.model_options.get("transformer_options") or {}).get(KEY)
    to = clone.model_options.get("transformer_options")
    if isinstance(source, ClusCaHolder) and isinstance(to, dict) and isinstance(to.get(KEY), ClusCaHolder):
        to[KEY] = source.child()


def diffusion_model_wrapper(executor, *args, **kwargs):
    """Decide, once per model call, whether it runs in full or from the cache."""
    dm = executor.class_obj
    return _planned_call(executor, dm, bind_forward_args(dm, args, kwargs), args, kwargs)


def apply_model_wrapper(executor, *args, **kwargs):
    """The same one level up, around ``BaseModel.apply_model`` (adapters with ``call_wrapper = "apply_model"``:
    the generic block forecast, since many diffusion models call no DIFFUSION_MODEL wrapper)."""
    base = executor.class_obj
    return _planned_call(executor, base.diffusion_model, bind_forward_args(base, args, kwargs, "_apply_model"),
                         args, kwargs)


def _planned_call(executor, dm, bound, args, kwargs):
    to = (bound or {}).get("transformer_options")
    holder = to.get(KEY) if isinstance(to, dict) else None
    run = getattr(holder, "run", None)
    if run is None or run.disabled:
        return executor(*args, **kwargs)
    try:
        plan, info = _eager(_plan_call, run, holder, dm, bound, to)
    except Exception as exc:  # noqa: BLE001 - an unexpected call shape runs in full instead of failing
        log.debug("ClusCa could not plan a call", exc_info=True)
        run.disabled = f"{type(exc).__name__}: {exc}"
        log.warning("ClusCa - caching switched off for the rest of this run: %s", run.disabled)
        plan = None
    if plan is None:
        return executor(*args, **kwargs)
    run.current = plan
    try:
        out = executor(*args, **kwargs)
    finally:
        run.current = None
    _eager(plan.adapter.end_call, plan)
    _eager(run.finish_call, plan, info.full_flops, info.cached_flops)
    if plan.full and not plan.failed:
        snapshot = cluster_snapshot(plan)
        if snapshot is not None:
            holder.run_clusters = snapshot
    return out


def _plan_call(run, holder, dm, bound, to):
    """(plan, call info), or (None, None) when this call must run untouched."""
    adapter = get_adapter(holder.family_key)
    info = adapter.describe_call(dm, bound, holder.config)
    sigmas, uuids = to.get("sigmas"), to.get("uuids")
    if not isinstance(info, str) and holder.config.memory_mode == "lite":
        info.cached_flops = 0.0       # cached steps skip every block
    if isinstance(info, str) or sigmas is None or not uuids:
        reason = info if isinstance(info, str) else "the sampler did not say which step this is"
        if run.stats.passthrough_reason is None:
            log.info("ClusCa - a model call runs in full: %s", reason)
            run.stats.passthrough_reason = reason
        return None, None
    plan = run.plan_call(float(sigmas.flatten()[0]), list(uuids), info.batch, info.fingerprint, dm, adapter,
                         info.geometry, info.grid, info.extras, slot_kinds=to.get("cond_or_uncond"))
    return plan, info


def apply_clusca(model, config: ClusCaConfig, node_id=None, adapter=None, settings=None):
    """A clone of ``model`` with ClusCa installed, or ``model`` itself (with a warning) when its family is
    not supported. Applying ClusCa to a model that already has it replaces the earlier settings.
    ``settings(adapter, config) -> config`` fills in what depends on the model's family (the nodes' choices,
    ``nodes/settings.py``); without it ``config`` is used as given. ``adapter`` forces one (benchmarks and
    tests, e.g. the generic block forecast on a model a family describes)."""
    config.validated()
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    if adapter is None:
        adapter, reason = (find_adapter(diffusion_model, type(model.model).__name__) if diffusion_model is not None
                           else (None, "no diffusion model found"))
    if adapter is None:
        log.warning("ClusCa - %s; the model passes through unchanged.", reason)
        return model
    if settings is not None:
        config = settings(adapter, config).validated()
    config = adapter.adjust_config(config.resolved())
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    to[KEY] = ClusCaHolder(config, adapter.key, node_id)
    existing = to.get("patches_replace", {}).get("dit", {})
    for kind in adapter.block_kinds:
        if getattr(getattr(adapter, "kinds", {}).get(kind), "forward_patch", None) is not None:
            install_forward_patches(m, adapter, kind, diffusion_model, ClusCaBlockPatch)
            continue
        for i in range(adapter.block_count(diffusion_model, kind)):
            inner = existing.get((kind, i))
            if isinstance(inner, ClusCaBlockPatch):
                inner = inner.inner
            m.set_model_patch_replace(ClusCaBlockPatch(kind, i, inner), "dit", kind, i)
    call_point, call_fn = ((WrappersMP.APPLY_MODEL, apply_model_wrapper) if adapter.call_wrapper == "apply_model"
                           else (WrappersMP.DIFFUSION_MODEL, diffusion_model_wrapper))
    for point in (WrappersMP.OUTER_SAMPLE, WrappersMP.DIFFUSION_MODEL, WrappersMP.APPLY_MODEL):
        m.remove_wrappers_with_key(point, KEY)
    for point, fn in ((WrappersMP.OUTER_SAMPLE, outer_sample_wrapper), (call_point, call_fn)):
        m.add_wrapper_with_key(point, KEY, fn)
    m.remove_callbacks_with_key(CallbacksMP.ON_CLONE, KEY)
    m.add_callback_with_key(CallbacksMP.ON_CLONE, KEY, own_holder_on_clone)
    return m
