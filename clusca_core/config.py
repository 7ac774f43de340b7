"""User-facing ClusCa settings and their validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

MAX_TAYLOR_ORDER = 4
MAX_CLUSTERS = 4096
MAX_INTERVAL = 100
MAX_WARMUP = 1000
KMEANS_DISTANCES = ("l2", "l1")
#: "fp8" / "int8": every Taylor factor in float8 e4m3 / int8 with a float32 scale per token; "fp8-diff": the
#: order-0 factor in the model's dtype and the higher-order differences in fp8; "int8-int4": the order-0 factor in
#: int8, the differences in 4 bits (clusca_core.compact)
COMPACT_DTYPES = ("fp8", "fp8-diff", "int8", "int8-int4")
CACHE_DTYPES = ("auto", "bf16", "fp16", "fp32") + COMPACT_DTYPES
CACHE_DEVICES = ("auto", "cpu")
MEMORY_MODES = ("full", "lite")
#: clusca        the paper's refresh: representatives' fresh MLP outputs blended into their clusters' cache
#: clusca-error  error propagation: each representative's forecast error corrects its whole cluster
#: taylorseer    Taylor forecast only (no clusters); fora: plain reuse (order 0, no clusters)
MODES = ("clusca", "clusca-error", "taylorseer", "fora", "probe")
REFRESH_SCOPES = ("double", "all")
#: named settings per model family (the adapters hold the values); "custom" = the inputs as given
PRESETS = ("custom", "quality", "balanced", "fast")
#: the threshold schedule's threshold when none is given
DEFAULT_ADAPTIVE_THRESHOLD = 0.1
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class ClusCaConfig:
    """Settings of one ClusCa application (what the node's inputs hold).

    fresh_interval:    a full step runs when the counter since the last full step reaches ``fresh_interval - 1``;
                       1 means every step is full (output identical to the uncached model).
    warmup_steps:      the first steps that always run in full.
    taylor_order:      order of the Taylor forecast of cached branches (0 = plain reuse, i.e. FORA).
    clusters:          K-means clusters per token stream (0 = plain TaylorSeer, no spatial refresh).
    propagation_ratio: gamma of the refresh, F0 <- (1 - gamma) F0 + gamma * fresh(representative).
    start_percent / end_percent: the part of the schedule where caching may happen; steps outside are full.
    seed:              seed of the generator that draws the representative tokens (never the global RNG).
    kmeans_iters:      Lloyd iterations per clustering (warm-started from the previous full step).
    kmeans_distance:   "l2" (squared Euclidean via matmul, the default) or "l1" (as the reference code).
    propagate_text:    refresh the text stream's cache with propagation too (False: representatives only).
    cluster_per_frame: video models: cluster each latent frame separately (``clusters`` per frame).
    cache_dtype:       dtype of the cached factors: "auto" (the model's compute dtype), "bf16", "fp16", "fp32",
                       "fp8" (every factor float8 e4m3 with per-token scales), "fp8-diff" (only the
                       higher-order differences in fp8), "int8" (every factor int8 with per-token scales) or
                       "int8-int4" (the order-0 factor in int8, the differences in 4 bits).
    cache_device:      "auto" (with the model) or "cpu" (offload: pinned host memory, asynchronous copies).
    memory_mode:       "full" (every block's branches, ClusCa's refresh) or "lite" (TaylorSeer-Lite: only the
                       output of the whole block stack is cached; on cached steps the blocks are skipped).
    mode:              how cached MLP outputs use the representatives (see MODES); "taylorseer" and "fora"
                       ignore ``clusters`` ("fora" also ``taylor_order``).
    error_weight:      clusca-error: share of a representative's forecast error given to its cluster-mates.
    refresh_scope:     which MLPs the representatives refresh: "double" (the paper: the MLP branches of
                       double-stream / DiT blocks) or "all" (also the MLP half of single-stream blocks, whose
                       cached output is then kept as separate attention and MLP parts).
    adaptive_threshold: error-adaptive schedule (0 = off, the fixed interval schedule): after the warm-up, a
                       cached step whose forecast error measured at the representatives exceeds this relative
                       value makes the next step a full one; at least one cached step follows every full step
                       and at most ``max_interval - 1`` do (``max_interval`` 0 = 2 x fresh_interval).
    target_speedup:    0 = off. Otherwise the speed-up controller (``schedule.SpeedupSchedule``): the run spends
                       ``round(steps / target_speedup)`` full steps (warm-up included) and the forecast error
                       measured at the representatives decides where (``adaptive_threshold`` is not used).
    preset:            "custom" (the settings above as given) or a named preset ("quality", "balanced",
                       "fast") whose measured per-family settings replace the schedule, mode and cluster
                       settings when the model's family is known (see the adapters' ``presets``).
    verbose:           log one line per cached step.
    """

    fresh_interval: int = 5
    warmup_steps: int = 3
    taylor_order: int = 1
    clusters: int = 16
    propagation_ratio: float = 0.005
    start_percent: float = 0.0
    end_percent: float = 1.0
    seed: int = 0
    kmeans_iters: int = 10
    kmeans_distance: str = "l2"
    propagate_text: bool = True
    cluster_per_frame: bool = False
    cache_dtype: str = "auto"
    cache_device: str = "auto"
    memory_mode: str = "full"
    mode: str = "clusca"
    error_weight: float = 1.0
    refresh_scope: str = "double"
    adaptive_threshold: float = 0.0
    max_interval: int = 0
    target_speedup: float = 0.0
    preset: str = "custom"
    verbose: bool = False

    def errors(self) -> list[str]:
        """Every problem with these settings, as messages a user can act on (empty when valid)."""
        out = []

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

        if not is_int(self.fresh_interval) or not 1 <= self.fresh_interval <= MAX_INTERVAL:
            out.append(f"fresh_interval must be an integer from 1 to {MAX_INTERVAL} (1 = every step computed in full); got {self.fresh_interval!r}")
        if not is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= MAX_WARMUP:
            out.append(f"warmup_steps must be an integer from 0 to {MAX_WARMUP}; got {self.warmup_steps!r}")
        if not is_int(self.taylor_order) or not 0 <= self.taylor_order <= MAX_TAYLOR_ORDER:
            out.append(f"taylor_order must be an integer from 0 to {MAX_TAYLOR_ORDER} (0 = plain reuse); got {self.taylor_order!r}")
        if not is_int(self.clusters) or not 0 <= self.clusters <= MAX_CLUSTERS:
            out.append(f"clusters must be an integer from 0 to {MAX_CLUSTERS} (0 = TaylorSeer without spatial refresh); got {self.clusters!r}")
        if not is_num(self.propagation_ratio) or not 0.0 <= self.propagation_ratio <= 1.0:
            out.append(f"propagation_ratio must be a number from 0 to 1; got {self.propagation_ratio!r}")
        for name in ("start_percent", "end_percent"):
            v = getattr(self, name)
            if not is_num(v) or not 0.0 <= v <= 1.0:
                out.append(f"{name} must be a number from 0 to 1; got {v!r}")
        if is_num(self.start_percent) and is_num(self.end_percent) and self.start_percent > self.end_percent:
            out.append(f"start_percent ({self.start_percent}) must not be greater than end_percent ({self.end_percent})")
        if not is_int(self.seed) or self.seed < 0:
            out.append(f"seed must be a non-negative integer; got {self.seed!r}")
        if not is_int(self.kmeans_iters) or not 1 <= self.kmeans_iters <= 1000:
            out.append(f"kmeans_iters must be an integer from 1 to 1000; got {self.kmeans_iters!r}")
        if not isinstance(self.cluster_per_frame, bool):
            out.append(f"cluster_per_frame must be true or false; got {self.cluster_per_frame!r}")
        if not is_num(self.adaptive_threshold) or not 0.0 <= self.adaptive_threshold <= 10.0:
            out.append(f"adaptive_threshold must be a number from 0 (off) to 10; got {self.adaptive_threshold!r}")
        if not is_int(self.max_interval) or not 0 <= self.max_interval <= MAX_INTERVAL:
            out.append(f"max_interval must be an integer from 0 (2 x fresh_interval) to {MAX_INTERVAL}; "
                       f"got {self.max_interval!r}")
        if not is_num(self.target_speedup) or not (self.target_speedup == 0 or 1.0 <= self.target_speedup <= 50.0):
            out.append(f"target_speedup must be 0 (off) or a number from 1 to 50; got {self.target_speedup!r}")
        wants_adaptive = is_num(self.adaptive_threshold) and is_num(self.target_speedup) and (
            self.adaptive_threshold > 0 or self.target_speedup > 0)
        if wants_adaptive and (self.mode in ("taylorseer", "fora") or self.memory_mode == "lite"
                               or (is_int(self.clusters) and self.clusters <= 0)):
            out.append("the error-adaptive schedule (adaptive_threshold / target_speedup) measures the forecast "
                       "error at the cluster representatives: it needs mode clusca or clusca-error, clusters > 0 "
                       "and memory_mode full; set both to 0 for a fixed schedule")
        if not is_num(self.error_weight) or not 0.0 <= self.error_weight <= 1.0:
            out.append(f"error_weight must be a number from 0 to 1; got {self.error_weight!r}")
        for name, allowed in (("preset", PRESETS), ("cache_dtype", CACHE_DTYPES), ("cache_device", CACHE_DEVICES),
                              ("memory_mode", MEMORY_MODES), ("mode", MODES),
                              ("refresh_scope", REFRESH_SCOPES)):
            if getattr(self, name) not in allowed:
                out.append(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.kmeans_distance not in KMEANS_DISTANCES:
            out.append(f"kmeans_distance must be one of {KMEANS_DISTANCES}; got {self.kmeans_distance!r}")
        return out

    def validated(self) -> "ClusCaConfig":
        """Return self, or raise ValueError listing every problem."""
        errs = self.errors()
        if errs:
            raise ValueError("Invalid ClusCa settings: " + "; ".join(errs))
        return self

    def resolved(self) -> "ClusCaConfig":
        """The settings as the cache uses them: the mode decides whether clusters and the Taylor order apply."""
        if self.mode == "taylorseer":
            return replace(self, clusters=0)
        if self.mode == "fora":
            return replace(self, clusters=0, taylor_order=0)
        return self

    @property
    def adaptive(self) -> bool:
        return (self.adaptive_threshold > 0 or self.target_speedup > 0) and self.fresh_interval > 1

    @property
    def error_threshold(self) -> float:
        return self.adaptive_threshold or DEFAULT_ADAPTIVE_THRESHOLD

    @property
    def interval_ceiling(self) -> int:
        return self.max_interval or 2 * self.fresh_interval

    @property
    def refresh_rule(self) -> str:
        """"blend" (the paper), "error" (error propagation), "probe" (the representatives only measure the
        forecast error: the output and the cache are TaylorSeer's) or "none" (no representatives)."""
        if self.clusters <= 0 or self.mode in ("taylorseer", "fora"):
            return "none"
        if self.mode == "probe":
            return "probe"
        return "error" if self.mode == "clusca-error" else "blend"

    @property
    def cache_torch_dtype(self):
        """The torch dtype of ``cache_dtype`` (None for "auto")."""
        import torch
        name = _TORCH_DTYPES.get(self.cache_dtype)
        return None if name is None else getattr(torch, name)

    @property
    def cache_compact(self):
        """The compact factor storage of ``cache_dtype`` (one of ``COMPACT_DTYPES``), or None."""
        return self.cache_dtype if self.cache_dtype in COMPACT_DTYPES else None

    @property
    def caches_anything(self) -> bool:
        """False when every step would run in full anyway (interval 1 or an empty window)."""
        return self.fresh_interval > 1 and self.end_percent > self.start_percent

    def with_changes(self, **changes) -> "ClusCaConfig":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)
