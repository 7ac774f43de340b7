"""The state of one sampling run: its schedule, the slot caches, the statistics, and the plan of each call.

A run sees one model call at a time per thread (the caller's multi-device CFG split runs conditionings in
parallel threads, one per device): :meth:`RunState.plan_call` decides how a call runs and returns its
:class:`~.plan.CallPlan`; :meth:`RunState.finish_call` books what the call did. Each step is decided once, before
its first call, so every call of a step (conditionings batched or split, a second-order sampler's extra
evaluations) gets the same answer; the errors the representatives measured on a cached step reach the
schedule as the mean over the step's conditionings once the step is over, whatever the batching.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Optional, Sequence

import torch

from .config import ClusCaConfig
from .plan import CallPlan
from .schedule import (ErrorPrior, FixedSchedule, Schedule, SpeedupSchedule, StepLocator, ThresholdSchedule,
                       build_full_step_mask)
from .slots import SlotCache

log = logging.getLogger("ClusCa")


@dataclass
class RunStats:
    """What happened during one run, for the summary."""
    evaluations_full: int = 0
    evaluations_cached: int = 0
    evaluations_skipped: int = 0      # calls another node answered without running the blocks
    full_steps: set = field(default_factory=set)
    cached_steps: set = field(default_factory=set)
    baseline_flops: float = 0.0
    actual_flops: float = 0.0
    peak_cache_bytes: int = 0
    rep_tokens: dict = field(default_factory=dict)   # stream -> representatives per row per refresh
    geometry: dict = field(default_factory=dict)
    passthrough_reason: Optional[str] = None
    probe_errors: list = field(default_factory=list)  # (step, position, mean relative error) per cached call


def make_schedule(config: ClusCaConfig, num_steps: int, window: Sequence[bool], continuation: bool = False,
                  prior: Optional[ErrorPrior] = None, final: bool = True) -> Schedule:
    """The schedule the settings ask for. A run that continues another one's schedule (its first sigma
    below the model's largest, e.g. the second expert of a two-model workflow) has a warm-up of one step:
    the structure is already there; the family's error profile (``prior``, over a whole run) does not apply
    to it. ``final``: the run's last step gives the output (its last sigma is 0); the speed-up controller runs
    it in full where the family's profile says so."""
    warmup = min(config.warmup_steps, 1) if continuation else config.warmup_steps
    forced = build_full_step_mask(num_steps, warmup, 10 ** 9, window)
    if not config.adaptive:
        return FixedSchedule(forced, warmup, config.fresh_interval, window)
    if config.target_speedup > 0:
        return SpeedupSchedule(forced, config.target_speedup, None if continuation else prior, final=final)
    return ThresholdSchedule(forced, config.error_threshold, config.interval_ceiling)


class RunState:
    """The state of one sampling run: schedule, slot caches, statistics."""

    def __init__(self, config: ClusCaConfig, sample_sigmas, start_sigma: float = float("inf"),
                 end_sigma: float = 0.0, cache_dtype: Optional[torch.dtype] = None, family: str = "model",
                 cache_device: Optional[torch.device] = None, continuation: bool = False,
                 error_prior: Optional[ErrorPrior] = None):
        self.config = config
        self.family = family
        #: dtype and device of the cached factors (None: those of the recorded values)
        self.cache_dtype = cache_dtype if cache_dtype is not None else config.cache_torch_dtype
        self.cache_device = cache_device
        self.locator = StepLocator(sample_sigmas)
        window = self.locator.window_mask(start_sigma, end_sigma)
        self.schedule = make_schedule(config, self.num_steps, window, continuation, error_prior,
                                      final=self.locator.sigmas[-1] == 0.0)
        self.slots: dict[Hashable, SlotCache] = {}
        self.stats = RunStats()
        self._decisions: dict[int, bool] = {}
        self._pending_errors: dict[int, dict] = defaultdict(dict)
        #: parallel conditionings (one thread per device): a plan per thread, shared state under one lock
        self._local = threading.local()
        self.lock = threading.RLock()
        #: set when caching was switched off for the rest of the run (the reason, for the log)
        self.disabled: Optional[str] = None
        #: whether a full call has already been checked against the family's view of the blocks
        self.verified = False
        #: results of the adapter's once-per-run checks of cached calls (check name -> value), e.g. whether a
        #: block kind's partial modulation matched the full one
        self.cached_checks: dict = {}
        #: measure the forecast error at the representatives (verbose mode, adaptive schedules)
        self.track_probe = bool(config.verbose or self.schedule.needs_probe)

    @property
    def num_steps(self) -> int:
        return self.locator.num_steps

    @property
    def current(self) -> Optional[CallPlan]:
        """The plan of the model call running in this thread (None outside a call)."""
        return getattr(self._local, "plan", None)

    @current.setter
    def current(self, plan: Optional[CallPlan]) -> None:
        self._local.plan = plan

    def slot_seed(self, kind: int) -> int:
        """The seed of a slot's generator: the node's seed and the slot's kind (0 positive, 1 negative), so
        that it does not depend on the order in which slots first appear."""
        return (int(self.config.seed) * 4 + int(kind)) % (2 ** 63)

    def is_full_step(self, step: int) -> bool:
        """The schedule's decision for ``step`` (asked once; later calls of the step get the same answer)."""
        if self.num_steps <= 0:
            return True
        decided = self._decisions.get(step)
        if decided is None:
            for done in [s for s in self._pending_errors if s < step]:
                errors = self._pending_errors.pop(done)
                self.schedule.observe(done, sum(errors.values()) / len(errors))
            decided = self._decisions[step] = bool(self.schedule.is_full(step))
        return decided

    # -- calls ----------------------------------------------------------------------------------------
    def plan_call(self, sigma: float, slot_keys: Sequence[Hashable], batch: int, fingerprint: Hashable,
                  model=None, adapter=None, geometry: Optional[dict] = None, grid=None,
                  extras: Optional[dict] = None, slot_kinds: Optional[Sequence[int]] = None) -> Optional[CallPlan]:
        """Decide how one model call runs (None: run it untouched, nothing can be cached for it). The call's
        batch holds ``len(slot_keys)`` conditionings of equal size, in that order; ``slot_kinds`` gives each
        one's kind (0 positive, 1 negative)."""
        if not slot_keys or batch % len(slot_keys) != 0:
            return None
        if slot_kinds is None or len(slot_kinds) != len(slot_keys):
            slot_kinds = [0] * len(slot_keys)
        with self.lock:
            position = self.locator.locate(sigma)
            step = self.locator.step_index(position)
            full = self.is_full_step(step)
            slots = []
            for key, kind in zip(slot_keys, slot_kinds):
                slot = self.slots.get(key)
                if slot is None or slot.fingerprint != fingerprint:
                    if slot is not None:
                        log.info("ClusCa: input shape changed for a conditioning; its cache starts over")
                    slot = SlotCache(fingerprint, self.slot_seed(kind))
                    self.slots[key] = slot
                if not slot.ready:
                    full = True
                slots.append(slot)
            plan = CallPlan(self, position, step, full, slots, batch // len(slot_keys), model, adapter, geometry,
                            grid, extras, slot_keys=list(slot_keys))
            plan.passive = full and step > self.schedule.last_cached_step
            plan.verify = full and not plan.passive and not self.verified
            if geometry:
                self.stats.geometry = dict(geometry)
            return plan

    def finish_call(self, plan: CallPlan, full_flops: float = 0.0, cached_flops: float = 0.0) -> None:
        with self.lock:
            self._finish_call(plan, full_flops, cached_flops)

    def _finish_call(self, plan: CallPlan, full_flops: float, cached_flops: float) -> None:
        s = self.stats
        if plan.failed:
            return
        if plan.blocks_run == 0:
            s.evaluations_skipped += 1
            return
        if plan.verify:
            self.verified = True
        rows = plan.rows * len(plan.slots)
        s.baseline_flops += full_flops * rows
        if plan.full:
            s.evaluations_full += 1
            s.full_steps.add(plan.step)
            s.actual_flops += full_flops * rows
            self.schedule.full_done(plan.step)
            if not plan.passive:
                s.peak_cache_bytes = max(s.peak_cache_bytes, self.cache_bytes)
            return
        s.evaluations_cached += 1
        s.cached_steps.add(plan.step)
        s.actual_flops += cached_flops * rows
        probe = None
        if plan.probe_errors:
            per_slot = torch.stack(plan.probe_errors).float().mean(dim=0).tolist()
            for key, value in zip(plan.slot_keys, per_slot):
                self._pending_errors[plan.step][key] = value
            probe = sum(per_slot) / len(per_slot)
            s.probe_errors.append((plan.step, round(plan.position, 4), probe))
        if self.config.verbose:
            log.info("ClusCa [verbose] step %d (position %.3f): cached; representatives %s; forecast error at "
                     "the representatives %s", plan.step, plan.position,
                     ", ".join(f"{k}={v}" for k, v in s.rep_tokens.items()) or "none",
                     "n/a" if probe is None else f"{100 * probe:.2f}%")

    @property
    def cache_bytes(self) -> int:
        return sum(slot.nbytes for slot in self.slots.values())

    # -- summary and release ----------------------------------------------------------------------------
    @property
    def planned_full_steps(self) -> int:
        """The full steps the schedule plans; for schedules that cannot say in advance, those taken."""
        planned = self.schedule.planned_full
        return planned if planned is not None else max(len(self.stats.full_steps), 1)

    def summary(self) -> dict:
        s = self.stats
        full = len(s.full_steps)
        cached = len(s.cached_steps - s.full_steps)
        est = (s.baseline_flops / s.actual_flops) if s.actual_flops > 0 else 1.0
        out = {
            "family": self.family,
            "steps": self.num_steps,
            "full_steps": full,
            "full_step_indices": sorted(s.full_steps),
            "cached_steps": cached,
            "planned_full_steps": self.planned_full_steps,
            "evaluations_full": s.evaluations_full,
            "evaluations_cached": s.evaluations_cached,
            "evaluations_skipped_by_other_nodes": s.evaluations_skipped,
            "tokens_per_cached_step": dict(s.rep_tokens),
            "estimated_flops_speedup": est,
            "schedule_bound": (self.num_steps / self.planned_full_steps) if self.planned_full_steps else 1.0,
            "speedup_reached": (self.num_steps / full) if full else 1.0,
            "schedule": self.schedule.describe(),
            "peak_cache_bytes": s.peak_cache_bytes,
            "geometry": dict(s.geometry),
            "mode": self.config.mode,
            "probe_errors": list(s.probe_errors),
        }
        if isinstance(self.schedule, SpeedupSchedule):
            out["speedup_asked"] = self.schedule.speedup
        return out

    def release(self) -> None:
        for slot in self.slots.values():
            slot.clear()
        self.slots.clear()
        self.current = None
