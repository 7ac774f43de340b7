"""The plan of one model call, and the cache operations its blocks use (record, cluster, forecast, refresh).

Tensors passed in are the whole call's batch: ``len(slots) * rows`` rows, in the order of the slots.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Hashable, Optional, Sequence

import torch

from . import refresh
from .config import ClusCaConfig
from .kmeans import kmeans
from .selection import select_representatives
from .slots import ClusterAssignment, SlotCache
from .taylor import TaylorCache
from .tokens import gather_tokens

log = logging.getLogger("ClusCa")


class CallPlan:
    """How the current model call runs, and the cache operations its blocks use.

    Tensors passed in are the whole call's batch, ``len(slots) * rows`` rows in the order of the slots.
    """

    def __init__(self, run, position: float, step: int, full: bool, slots: list[SlotCache],
                 rows: int, model=None, adapter=None, geometry: Optional[dict] = None, grid=None,
                 extras: Optional[dict] = None, slot_keys: Optional[list] = None):
        #: the RunState this call belongs to
        self.run = run
        #: the callers' keys of the slots, in batch order
        self.slot_keys = slot_keys if slot_keys is not None else list(range(len(slots)))
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
        #: relative forecast errors measured at the representatives during this call: one (slots,) tensor per
        #: refreshed branch
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
                cache = TaylorCache(cfg.taylor_order, self.run.cache_dtype, self.run.cache_device,
                                    compact=cfg.cache_compact)
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
                diff = (fresh.float() - predicted.float()).reshape(len(self.slots), -1)
                ref = fresh.float().reshape(len(self.slots), -1)
                self.probe_errors.append((diff.norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).detach())
        if rule == "probe":
            return self.add_forecast(x, gate, key, inplace)
        if rule == "blend":
            gamma = cfg.propagation_ratio if gamma is None else gamma
            for i, (slot, a, idx) in enumerate(zip(self.slots, assignments, picks)):
                refresh.blend(slot.branches[key], a.labels, idx, fresh[i * r:(i + 1) * r], gamma, x.device)
            return self.add_forecast(x, gate, key, inplace)
        weight = cfg.error_weight if gamma is None or gamma > 0 else 0.0
        out = self.add_forecast(x, gate, key, inplace)
        error = (fresh - predicted).to(out.dtype)
        for i, (a, (idx, valid)) in enumerate(zip(assignments, drawn)):
            sl = slice(i * r, (i + 1) * r)
            correction = refresh.error_correction(a.labels, idx, valid, error[sl], weight, out[sl])
            g = self._gate_rows(gate, x, sl)
            if g is None:
                out[sl].add_(correction)
            else:
                out[sl].addcmul_(g, correction)
        return out
