"""Per-run ClusCa state: one cache per conditioning slot, and the plan a model call works through.

A *slot* is one conditioning of the sampler (positive, negative, each area cond...), identified by the
uuid ComfyUI gives it. Caches are kept per slot, so cond/uncond batched together or called one by one, and
conds that are active for part of the schedule only, all keep their own history. Within a slot, every
tensor is (rows, tokens, features): each batch element is cached, clustered and refreshed on its own.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence

import torch

from .config import ClusCaConfig
from .kmeans import kmeans
from .propagation import propagate_fresh
from .schedule import StepLocator, build_full_step_mask
from .selection import select_representatives
from .taylor import TaylorCache
from .tokens import gather_tokens, scatter_add_tokens_

log = logging.getLogger("ClusCa")


@dataclass
class ClusterAssignment:
    """Token clusters of one stream of one slot, from the last full step."""
    labels: torch.Tensor          # (rows, N) int64, global cluster id of each token
    centroids: list[torch.Tensor]  # per segment: (rows, K_s, D) float32, for the next warm start
    num_clusters: int             # total clusters over all segments

    @property
    def nbytes(self) -> int:
        return self.labels.numel() * self.labels.element_size() + sum(c.numel() * c.element_size() for c in self.centroids)


class SlotCache:
    """Everything cached for one conditioning slot during one sampling run.

    ``seed`` seeds the slot's own generator (representative tokens, first clustering): the draws of a slot do
    not depend on which other slots share its model calls, so cond and uncond batched together, called one by
    one, or run in parallel threads on several devices give the same result.
    """

    def __init__(self, fingerprint: Hashable, seed: int = 0):
        self.fingerprint = fingerprint
        self.seed = seed
        self.branches: dict[Hashable, TaylorCache] = {}
        self.clusters: dict[str, ClusterAssignment] = {}
        self.position: Optional[float] = None
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    @property
    def ready(self) -> bool:
        """Whether a full step recorded anything for this slot (a cached step needs that)."""
        return self.position is not None

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.branches.values()) + sum(c.nbytes for c in self.clusters.values())

    def clear(self) -> None:
        self.branches.clear()
        self.clusters.clear()
        self.position = None
        self._generators.clear()


@dataclass
class RunStats:
    """What happened during one run, for the summary line."""
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


class RunState:
    """The state of one sampling run: schedule, slot caches, the representative-token generator, stats."""

    def __init__(self, config: ClusCaConfig, sample_sigmas, start_sigma: float = float("inf"),
                 end_sigma: float = 0.0, cache_dtype: Optional[torch.dtype] = None, family: str = "model",
                 cache_device: Optional[torch.device] = None):
        self.config = config
        self.family = family
        #: dtype and device of the cached factors (None: those of the recorded values)
        self.cache_dtype = cache_dtype if cache_dtype is not None else config.cache_torch_dtype
        self.cache_device = cache_device
        self.locator = StepLocator(sample_sigmas)
        window = self.locator.window_mask(start_sigma, end_sigma)
        self.schedule = build_full_step_mask(self.locator.num_steps, config.warmup_steps, config.fresh_interval, window)
        cached = [i for i, full in enumerate(self.schedule) if not full]
        #: full steps after this one have nothing left to feed: they run without recording anything
        self.last_cached_step = cached[-1] if cached else -1
        #: steps outside the warm-up and the caching window (they are full whatever the schedule)
        self.forced_full = build_full_step_mask(self.locator.num_steps, config.warmup_steps, 10 ** 9, window)
        if config.adaptive:
            self.last_cached_step = self.num_steps
        #: the error-adaptive schedule's state: last full step, and the cached step whose error asked for one
        self.last_full_step: Optional[int] = None
        self.full_requested_after: Optional[int] = None
        #: target_speedup: the full-step budget of this run (None: no budget)
        self.full_budget: Optional[int] = None
        if config.adaptive and config.target_speedup > 0:
            self.full_budget = max(1, round(self.num_steps / config.target_speedup))
        self.slots: dict[Hashable, SlotCache] = {}
        self.stats = RunStats()
        #: ComfyUI's multi-GPU CFG split runs conditionings in parallel threads (one per device), each with
        #: its own model call: every thread has its own current plan, and the shared decisions and
        #: statistics are taken under one lock
        self._local = threading.local()
        self.lock = threading.RLock()
        #: set when caching was switched off for the rest of the run (the reason, for the log)
        self.disabled: Optional[str] = None
        #: whether a full call has already been checked against the adapter's view of the blocks
        self.verified = False
        #: the image-token clusters of the last clustering (first conditioning, first batch row), on CPU
        self.cluster_snapshot: Optional[dict] = None
        #: measure the forecast error at the representatives (verbose mode, adaptive schedule); one sync a call
        self.track_probe = bool(config.verbose or config.adaptive)

    # -- schedule -------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.locator.num_steps

    @property
    def planned_full_steps(self) -> int:
        """Full steps of the fixed schedule; with the adaptive schedule, the full steps taken so far."""
        if self.config.adaptive:
            return max(len(self.stats.full_steps), 1)
        return sum(self.schedule)

    def is_full_step(self, step: int) -> bool:
        """The fixed schedule's decision, or the error-adaptive one."""
        if self.num_steps <= 0:
            return True
        if not self.config.adaptive:
            return self.schedule[step]
        if self.forced_full[step] or self.last_full_step is None:
            return True
        distance = step - self.last_full_step
        if distance <= 0:
            return True                     # another evaluation of the last full step (split cond/uncond)
        if distance >= self.config.interval_ceiling:
            return True                     # never more cached steps in a row than the ceiling allows
        if self.full_budget is not None:
            # keep enough of the budget for the ceiling-forced full steps still to come after this one
            reserve = (self.num_steps - 1 - step) // self.config.interval_ceiling
            if len(self.stats.full_steps) + reserve >= self.full_budget:
                return False                # the budget of target_speedup is spent: no error-requested ones
        requested = self.full_requested_after is not None and step > self.full_requested_after
        return requested and distance >= 2

    def adaptive_threshold_at(self, step: int) -> float:
        """The error threshold at a cached step; with a budget, scaled by 2^(full steps used - budget pace)."""
        tau = self.config.error_threshold
        if self.full_budget is None:
            return tau
        warm = sum(self.forced_full[: step + 1])
        free = max(self.num_steps - sum(self.forced_full), 1)
        pace = warm + (self.full_budget - sum(self.forced_full)) * (step + 1 - warm) / free
        return tau * 2.0 ** (len(self.stats.full_steps) - pace)

    @property
    def current(self) -> Optional["CallPlan"]:
        """The plan of the model call running in this thread (None outside a call)."""
        return getattr(self._local, "plan", None)

    @current.setter
    def current(self, plan: Optional["CallPlan"]) -> None:
        self._local.plan = plan

    def slot_seed(self, kind: int) -> int:
        """The seed of a slot's generator: the node's seed and whether the slot is a positive (0) or negative
        (1) conditioning, so that it does not depend on the order in which slots first appear."""
        return (int(self.config.seed) * 4 + int(kind)) % (2 ** 63)

    # -- calls ----------------------------------------------------------------------------------------
    def plan_call(self, sigma: float, slot_keys: Sequence[Hashable], batch: int, fingerprint: Hashable,
                  model=None, adapter=None, geometry: Optional[dict] = None, grid=None,
                  extras: Optional[dict] = None, slot_kinds: Optional[Sequence[int]] = None) -> Optional["CallPlan"]:
        """Decide how one model call runs. None means: run it untouched (nothing can be cached for it).
        ``slot_kinds`` gives each slot's kind (0 positive, 1 negative; ComfyUI's ``cond_or_uncond``)."""
        if not slot_keys or batch % len(slot_keys) != 0:
            return None
        if slot_kinds is None or len(slot_kinds) != len(slot_keys):
            slot_kinds = [0] * len(slot_keys)
        with self.lock:
            return self._plan_call(sigma, slot_keys, batch, fingerprint, model, adapter, geometry, grid, extras,
                                   slot_kinds)

    def _plan_call(self, sigma, slot_keys, batch, fingerprint, model, adapter, geometry, grid, extras, slot_kinds):
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
        plan = CallPlan(self, position, step, full, slots, batch // len(slot_keys), model, adapter, geometry or {},
                        grid, extras)
        plan.passive = full and step > self.last_cached_step
        plan.verify = full and not plan.passive and not self.verified
        if geometry:
            self.stats.geometry = dict(geometry)
        return plan

    def finish_call(self, plan: "CallPlan", full_flops: float = 0.0, cached_flops: float = 0.0) -> None:
        with self.lock:
            self._finish_call(plan, full_flops, cached_flops)

    def _finish_call(self, plan: "CallPlan", full_flops: float, cached_flops: float) -> None:
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
            if plan.passive:
                return
            if self.last_full_step is None or plan.step >= self.last_full_step:
                self.last_full_step = plan.step
                self.full_requested_after = None
            s.peak_cache_bytes = max(s.peak_cache_bytes, self.cache_bytes)
        else:
            s.evaluations_cached += 1
            s.cached_steps.add(plan.step)
            s.actual_flops += cached_flops * rows
            probe = None
            if plan.probe_errors:
                probe = float(torch.stack(plan.probe_errors).mean())
                s.probe_errors.append((plan.step, round(plan.position, 4), probe))
                if self.config.adaptive and probe > self.adaptive_threshold_at(plan.step):
                    self.full_requested_after = plan.step
            if self.config.verbose:
                log.info("ClusCa [verbose] step %d (position %.3f): cached; representatives %s; forecast error at "
                         "the representatives %s", plan.step, plan.position,
                         ", ".join(f"{k}={v}" for k, v in s.rep_tokens.items()) or "none",
                         "n/a" if probe is None else f"{100 * probe:.2f}%")

    @property
    def cache_bytes(self) -> int:
        return sum(slot.nbytes for slot in self.slots.values())

    # -- summary and release ----------------------------------------------------------------------------
    def summary(self) -> dict:
        s = self.stats
        full = len(s.full_steps)
        cached = len(s.cached_steps - s.full_steps)
        est = (s.baseline_flops / s.actual_flops) if s.actual_flops > 0 else 1.0
        return {
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
            "peak_cache_bytes": s.peak_cache_bytes,
            "geometry": dict(s.geometry),
            "mode": self.config.mode,
            "probe_errors": list(s.probe_errors),
        }

    def release(self) -> None:
        for slot in self.slots.values():
            slot.clear()
        self.slots.clear()
        self.current = None


class CallPlan:
    """How the current model call runs, and the cache operations its blocks use.

    Tensors passed in are the whole call's batch, ``len(slots) * rows`` rows in the order of the slots.
    """

    def __init__(self, run: RunState, position: float, step: int, full: bool, slots: list[SlotCache],
                 rows: int, model=None, adapter=None, geometry: Optional[dict] = None, grid=None,
                 extras: Optional[dict] = None):
        self.run = run
        self.position = position
        self.step = step
        self.full = full
        self.slots = slots
        self.rows = rows
        self.model = model
        self.adapter = adapter
        self.geometry = geometry or {}
        #: (frames, rows, columns) of the image tokens, for cluster maps; None when unknown
        self.grid = grid
        #: adapter-specific values for this call's blocks (e.g. clustering segments)
        self.extras = extras or {}
        self.verify = False
        self.failed = False
        #: a full call after the last cached step: ComfyUI's blocks run untouched, nothing is recorded
        self.passive = False
        #: blocks that went through ClusCa's patches during this call (0: another node skipped the model)
        self.blocks_run = 0
        #: relative forecast errors measured at the representatives during this call (tensors)
        self.probe_errors: list = []

    def abandon(self, reason: str) -> None:
        """Stop caching: the rest of this call runs ComfyUI's blocks untouched, later calls too."""
        if not self.failed:
            log.warning("ClusCa - caching switched off for the rest of this run: %s. "
                        "The model runs unchanged (no speed-up).", reason)
        self.failed = True
        if self.run.disabled is None:
            self.run.disabled = reason

    @contextmanager
    def guard(self, where: str):
        """Turn an unexpected error in ClusCa's own bookkeeping into ``abandon`` instead of a crash."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - never break a user's run over the cache
            log.debug("ClusCa error in %s", where, exc_info=True)
            self.abandon(f"{where}: {type(exc).__name__}: {exc}")

    @property
    def config(self) -> ClusCaConfig:
        return self.run.config

    def _chunks(self, x: torch.Tensor):
        r = self.rows
        for i, slot in enumerate(self.slots):
            yield slot, x[i * r:(i + 1) * r]

    # -- full steps -----------------------------------------------------------------------------------
    def record(self, key: Hashable, value: torch.Tensor) -> None:
        """Store a branch output computed in full (whole batch) into each slot's Taylor factors."""
        cfg = self.run.config
        for slot, chunk in self._chunks(value):
            cache = slot.branches.get(key)
            if cache is None:
                cache = TaylorCache(cfg.taylor_order, self.run.cache_dtype, self.run.cache_device)
                slot.branches[key] = cache
            cache.update(chunk, self.position)
            slot.position = self.position

    def cluster(self, stream: str, x: torch.Tensor, segments: Optional[Sequence[int]] = None) -> None:
        """Cluster the tokens of ``x`` (whole batch) per slot and row; ``segments`` splits the token axis
        into parts clustered separately (e.g. one per video frame), each into ``clusters`` clusters."""
        cfg = self.run.config
        if cfg.clusters <= 0:
            return
        n = x.shape[1]
        if segments is None:
            segments = [n]
        if sum(segments) != n or any(s <= 0 for s in segments):
            raise ValueError(f"segments {list(segments)} do not cover {n} tokens")
        for slot, chunk in self._chunks(x):
            gen = slot.generator(x.device)
            old = slot.clusters.get(stream)
            labels = torch.empty(chunk.shape[:2], dtype=torch.long, device=x.device)
            centroids, offset, start = [], 0, 0
            for si, length in enumerate(segments):
                init = old.centroids[si] if old is not None and si < len(old.centroids) else None
                res = kmeans(chunk[:, start:start + length], cfg.clusters, iters=cfg.kmeans_iters, init=init,
                             generator=gen, distance=cfg.kmeans_distance)
                labels[:, start:start + length] = res.labels + offset
                centroids.append(res.centroids)
                offset += res.centroids.shape[1]
                start += length
            slot.clusters[stream] = ClusterAssignment(labels, centroids, offset)
        if stream == "img":
            first = self.slots[0].clusters[stream]
            offset = int(self.extras.get("image_token_offset", 0))
            n = None if self.grid is None else self.grid[0] * self.grid[1] * self.grid[2]
            labels = first.labels[0, offset:None if n is None else offset + n]
            self.run.cluster_snapshot = {"labels": labels.detach().cpu(), "grid": self.grid,
                                         "num_clusters": first.num_clusters, "step": self.step}

    def join_clusters(self, stream: str, parts: Sequence[str]) -> None:
        """A stream whose tokens are the concatenation of other streams' tokens (e.g. the joint text + image
        sequence of single-stream blocks), with their clusters kept apart."""
        for slot in self.slots:
            assignments = [slot.clusters.get(p) for p in parts]
            if any(a is None for a in assignments):
                return
            labels, offset = [], 0
            for a in assignments:
                labels.append(a.labels + offset)
                offset += a.num_clusters
            slot.clusters[stream] = ClusterAssignment(torch.cat(labels, dim=1), [], offset)

    # -- cached steps ---------------------------------------------------------------------------------
    def predict(self, key: Hashable) -> torch.Tensor:
        """Taylor forecast of a branch for the whole batch."""
        parts = [slot.branches[key].predict(self.position) for slot in self.slots]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def _gate_rows(self, gate: Optional[torch.Tensor], x: torch.Tensor, sl: slice) -> Optional[torch.Tensor]:
        """The part of ``gate`` for the rows ``sl`` of ``x`` (a gate with one row per batch row is sliced; one
        that broadcasts over the batch, or None, is returned as it is)."""
        if gate is None or gate.ndim != x.ndim or gate.shape[0] != x.shape[0] or x.shape[0] <= self.rows:
            return gate
        return gate[sl]

    def add_forecast(self, x: torch.Tensor, gate: Optional[torch.Tensor], key: Hashable,
                     inplace: bool = False) -> torch.Tensor:
        """``x + gate * forecast(key)`` for the whole batch, as a new tensor (or into ``x`` when
        ``inplace``). ``gate`` broadcasts against ``x`` (e.g. a (B, 1, D) modulation gate, or (B, N, D) one
        per token); None = an ungated branch."""
        out = x if inplace else torch.empty_like(x)
        r = self.rows
        for i, slot in enumerate(self.slots):
            sl = slice(i * r, (i + 1) * r)
            slot.branches[key].add_forecast(x[sl], self._gate_rows(gate, x, sl), self.position, out=out[sl])
        return out

    def add_refreshed_forecast(self, x: torch.Tensor, gate: Optional[torch.Tensor], key: Hashable, stream: str,
                               fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                               gamma: Optional[float] = None, inplace: bool = False,
                               source: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x + gate * forecast(key)`` where the forecast of this (token-wise MLP) branch is refreshed from
        one random token per cluster of ``stream``: those tokens go through ``fn(tokens, index)`` (the real
        branch; ``index`` (rows, K) are their positions, for per-token modulation) on their current input
        ``x``. What the fresh values do depends on the mode:

        - ``clusca`` (the paper): each fresh value replaces its token's cached order-0 factor and is blended
          into its cluster-mates' (``F0 <- (1 - gamma) F0 + gamma fresh``), persistently.
        - ``clusca-error``: each representative's forecast error ``fresh - forecast`` is added to the forecast
          of its cluster-mates (times ``error_weight``); representatives get their fresh value; the cache
          itself is not changed.

        ``gamma=0`` (e.g. text without propagation) limits either rule to the representatives themselves.
        ``source`` is the tensor the representatives' inputs are taken from when it is not ``x`` (parallel
        blocks, whose MLP reads the block input). Without clusters (``clusters=0``, taylorseer/fora modes,
        none recorded) this is ``add_forecast``.
        """
        cfg = self.run.config
        rule = cfg.refresh_rule
        assignments = [slot.clusters.get(stream) for slot in self.slots]
        if rule == "none" or any(a is None for a in assignments):
            return self.add_forecast(x, gate, key, inplace)
        drawn = [select_representatives(a.labels, a.num_clusters, slot.generator(x.device))
                 for slot, a in zip(self.slots, assignments)]
        picks = [idx for idx, _ in drawn]
        src = x if source is None else source
        reps = torch.cat([gather_tokens(chunk, idx) for (_, chunk), idx in zip(self._chunks(src), picks)], dim=0)
        fresh = fn(reps, torch.cat(picks, dim=0))
        self.run.stats.rep_tokens[stream] = int(picks[0].shape[1])
        r = self.rows
        predicted = None
        if rule == "error" or self.run.track_probe:
            predicted = torch.cat([slot.branches[key].forecast_rows(idx, self.position, x.device, fresh.dtype)
                                   for slot, idx in zip(self.slots, picks)], dim=0)
            if self.run.track_probe:
                err = (fresh.float() - predicted.float()).norm() / fresh.float().norm().clamp_min(1e-12)
                self.probe_errors.append(err.detach())
        if rule == "blend":
            gamma = cfg.propagation_ratio if gamma is None else gamma
            for i, (slot, a, idx) in enumerate(zip(self.slots, assignments, picks)):
                cache = slot.branches[key]
                f0 = cache.order0_on(x.device)
                propagate_fresh(f0, a.labels, idx, fresh[i * r:(i + 1) * r], gamma)
                cache.write_order0(f0)
            return self.add_forecast(x, gate, key, inplace)
        weight = cfg.error_weight if gamma is None or gamma > 0 else 0.0
        out = self.add_forecast(x, gate, key, inplace)
        error = (fresh - predicted).to(out.dtype)
        for i, (a, (idx, valid)) in enumerate(zip(assignments, drawn)):
            sl = slice(i * r, (i + 1) * r)
            err = error[sl] * valid.unsqueeze(-1)    # an empty cluster's stand-in representative counts once
            correction = gather_tokens(err * weight, a.labels) if weight > 0 else torch.zeros_like(out[sl])
            if weight < 1.0:
                # the representatives themselves get their fresh value exactly
                correction = scatter_add_tokens_(correction, idx, err * (1.0 - weight))
            g = self._gate_rows(gate, x, sl)
            if g is None:
                out[sl].add_(correction)
            else:
                out[sl].addcmul_(g, correction)
        return out
