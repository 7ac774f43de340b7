"""The ClusCa nodes people use: ``ClusCa`` (the speed-up you ask for, and the caching window) and
``ClusCaAdvanced`` (everything else). Every default is the measured best; the paper's exact fixed schedule is
the advanced node's named choice ``schedule = paper``. The deprecated ``ApplyClusCa`` (apply_clusca.py) keeps
its inputs and results for graphs saved with it."""

from __future__ import annotations

from comfy_api.latest import io

from ..clusca_core.config import (CACHE_DEVICES, CACHE_DTYPES, MAX_CLUSTERS, MAX_INTERVAL, MAX_TAYLOR_ORDER,
                                  MAX_WARMUP, MEMORY_MODES, MODES, ClusCaConfig)
from .patching import apply_clusca
from .settings import BEST, DEFAULT_SPEEDUP, SCHEDULES, controller_settings, paper_settings

CATEGORY = "ClusCa"
MAX_SPEEDUP = 20.0


def _speedup_input(default: float = DEFAULT_SPEEDUP) -> io.Float.Input:
    return io.Float.Input("speedup", default=default, min=1.0, max=MAX_SPEEDUP, step=0.25,
                          tooltip="How many times fewer full model evaluations: the run computes steps / speedup "
                                  "steps in full and forecasts the others; where the full steps go is decided by "
                                  "the forecast error ClusCa measures on a few real tokens. 1 = every step in full "
                                  "(the output of the model without ClusCa). Higher = faster, less faithful.")


def _window_inputs() -> list:
    return [
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Caching starts at this fraction of the schedule; steps before it run in full."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Caching ends at this fraction of the schedule; steps after it run in full."),
    ]


def _node_id(cls):
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def _checked(make):
    """``validate_inputs`` from a function that builds the config: a message naming the input, or True."""
    try:
        errors = make().errors()
    except (TypeError, ValueError) as exc:
        return str(exc)
    return "; ".join(errors) if errors else True


class ClusCa(io.ComfyNode):
    """ClusCa with the inputs most people need: the speed-up and the caching window."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCa",
            display_name="ClusCa",
            category=CATEGORY,
            description=("Makes diffusion transformers (FLUX.1/2, Qwen-Image, Wan, HunyuanVideo, LTX, Z-Image, Chroma, "
                         "DiT...) several times faster: only steps / speedup steps run the full model; the others "
                         "forecast every block from the cache, refreshed from one real token per cluster. Models "
                         "it does not know pass through unchanged."),
            inputs=[io.Model.Input("model", tooltip="The diffusion model to accelerate (from a model loader)."),
                    _speedup_input(), *_window_inputs()],
            outputs=[io.Model.Output(tooltip="The model with ClusCa; connect it to the sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @staticmethod
    def config_from(speedup=DEFAULT_SPEEDUP, start_percent=0.0, end_percent=1.0) -> ClusCaConfig:
        config = ClusCaConfig(**BEST, start_percent=float(start_percent), end_percent=float(end_percent))
        if float(speedup) <= 1.0:                    # every step in full
            return config.with_changes(fresh_interval=1)
        return config.with_changes(target_speedup=float(speedup))

    @classmethod
    def validate_inputs(cls, **inputs):
        return _checked(lambda: cls.config_from(**{k: v for k, v in inputs.items() if k != "model"}))

    @classmethod
    def execute(cls, model, speedup=DEFAULT_SPEEDUP, start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        config = cls.config_from(speedup, start_percent, end_percent).validated()
        return io.NodeOutput(apply_clusca(model, config, node_id=_node_id(cls), settings=controller_settings))


class ClusCaAdvanced(io.ComfyNode):
    """ClusCa with every setting; the defaults are those of the basic node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        b = BEST
        return io.Schema(
            node_id="ClusCaAdvanced",
            display_name="ClusCa (Advanced)",
            category=CATEGORY,
            description=("ClusCa with every setting: the schedule (speed-up controller, error threshold, fixed "
                         "interval, or the paper's exact schedule and settings), the forecast, the clusters, the "
                         "cache's precision and place. Defaults are the measured best (those of the ClusCa node)."),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (from a model loader)."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default=SCHEDULES[0],
                               tooltip="speed-up = spend steps / speedup full steps where the measured forecast "
                                       "error says (default); error threshold = a full step whenever the error "
                                       "exceeds adaptive_threshold; fixed interval = a full step every "
                                       "fresh_interval steps; paper = the reference code's exact schedule and "
                                       "settings for this model family (the five inputs below it are ignored)."),
                _speedup_input(),
                io.Float.Input("adaptive_threshold", default=0.08, min=0.001, max=10.0, step=0.01,
                               tooltip="schedule 'error threshold': a cached step whose relative forecast error "
                                       "at the representative tokens exceeds this makes the next step full."),
                io.Int.Input("fresh_interval", default=b["fresh_interval"], min=1, max=MAX_INTERVAL, step=1,
                             tooltip="schedule 'fixed interval': a full step every N steps after the warm-up "
                                     "(1 = every step full). The error threshold never lets more than 2N - 1 "
                                     "steps in a row be cached."),
                io.Int.Input("warmup_steps", default=b["warmup_steps"], min=0, max=MAX_WARMUP, step=1,
                             tooltip="The first steps always run in full (they count in the speed-up budget)."),
                io.Int.Input("taylor_order", default=b["taylor_order"], min=0, max=MAX_TAYLOR_ORDER, step=1,
                             tooltip="Order of the Taylor forecast of cached features (0 = plain reuse)."),
                io.Int.Input("clusters", default=b["clusters"], min=0, max=MAX_CLUSTERS, step=1,
                             tooltip="Token clusters per stream; one random token per cluster goes through the "
                                     "real MLP on cached steps (refresh and error probe). 0 = plain TaylorSeer "
                                     "(no probe: only the fixed interval schedule)."),
                io.Float.Input("propagation_ratio", default=b["propagation_ratio"], min=0.0, max=1.0, step=0.001,
                               tooltip="How strongly a representative's fresh MLP output is blended into the "
                                       "cache of the other tokens of its cluster (gamma)."),
                io.Combo.Input("mode", options=list(MODES), default=b["mode"],
                               tooltip="clusca = the paper's refresh; clusca-error = each representative's "
                                       "forecast error corrects its whole cluster; taylorseer = forecast only; "
                                       "fora = plain reuse (both without the error probe); probe = TaylorSeer's "
                                       "forecast, the representatives only measure its error (for the schedules)."),
                *_window_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, step=1, control_after_generate=False,
                             tooltip="Seed of ClusCa's own generator (representative tokens, first clustering); "
                                     "the sampler's noise is never touched."),
                io.Boolean.Input("cluster_per_frame", default=False,
                                 tooltip="Video models: cluster every latent frame separately."),
                io.Combo.Input("cache_dtype", options=list(CACHE_DTYPES), default="auto",
                               tooltip="Precision of the cache: auto = the model's compute dtype; fp8 = every Taylor "
                                       "factor in float8 with per-token scales (half of bf16); fp8-diff = only the "
                                       "higher-order differences in fp8; int8 = every factor in int8 with per-token "
                                       "scales (as small as fp8, closer to the model's dtype: the compact choice); "
                                       "int8-int4 = the order-0 factor in int8, the differences in 4 bits."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="auto",
                               tooltip="auto = with the model; cpu = offloaded to pinned host memory."),
                io.Combo.Input("memory_mode", options=list(MEMORY_MODES), default="full",
                               tooltip="full = every block's branches are cached (ClusCa); lite = only the block "
                                       "stack's output (TaylorSeer-Lite: far less memory, no refresh, no probe)."),
                io.Boolean.Input("verbose", default=False,
                                 tooltip="Log one line per cached step with the forecast error measured at the "
                                         "representative tokens."),
            ],
            outputs=[io.Model.Output(tooltip="The model with ClusCa; connect it to the sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @staticmethod
    def config_from(schedule=SCHEDULES[0], speedup=DEFAULT_SPEEDUP, adaptive_threshold=0.08, **inputs) -> ClusCaConfig:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
        given = {k: v for k, v in inputs.items() if v is not None}
        for k in ("propagation_ratio", "start_percent", "end_percent"):
            if k in given:
                given[k] = float(given[k])
        config = ClusCaConfig(**{**BEST, **given})
        if schedule == "speed-up":
            if float(speedup) <= 1.0:
                return config.with_changes(fresh_interval=1)
            return config.with_changes(target_speedup=float(speedup), adaptive_threshold=0.0)
        if schedule == "error threshold":
            return config.with_changes(adaptive_threshold=float(adaptive_threshold), target_speedup=0.0)
        return config.with_changes(adaptive_threshold=0.0, target_speedup=0.0)

    @classmethod
    def validate_inputs(cls, **inputs):
        return _checked(lambda: cls.config_from(**{k: v for k, v in inputs.items() if k != "model"}))

    @classmethod
    def execute(cls, model, schedule=SCHEDULES[0], **inputs) -> io.NodeOutput:
        config = cls.config_from(schedule, **inputs).validated()
        settings = paper_settings if schedule == "paper" else None
        return io.NodeOutput(apply_clusca(model, config, node_id=_node_id(cls), settings=settings))
