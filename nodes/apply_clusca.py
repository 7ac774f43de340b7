"""The deprecated ``ApplyClusCa`` node (the pack's first node): MODEL in, MODEL with ClusCa out.

Superseded by ``ClusCa`` / ``ClusCaAdvanced`` (clusca_nodes.py). It stays registered, hidden from the node
search, so that graphs and API calls saved with it load and run with every input keeping its meaning: its
defaults are the paper's fixed schedule, its presets and the family reference settings it applies when five
inputs are left at their defaults are unchanged (``settings.legacy_settings``); ``target_speedup`` now runs the
speed-up controller."""

from __future__ import annotations

from dataclasses import fields

from comfy_api.latest import io

from ..clusca_core.config import (CACHE_DEVICES, CACHE_DTYPES, MAX_CLUSTERS, MAX_INTERVAL, MAX_TAYLOR_ORDER,
                                  MAX_WARMUP, MEMORY_MODES, MODES, PRESETS, ClusCaConfig)
from .patching import apply_clusca
from .settings import legacy_settings

DEFAULTS = ClusCaConfig()
CONFIG_FIELDS = {f.name for f in fields(ClusCaConfig)}


def _inputs() -> list:
    d = DEFAULTS
    return [
        io.Model.Input("model", tooltip="The diffusion model to accelerate (from a model loader)."),
        io.Int.Input("fresh_interval", default=d.fresh_interval, min=1, max=MAX_INTERVAL, step=1,
                     tooltip="A full step runs every N steps (after the warm-up); the steps in between are "
                             "forecast from the cache. 1 = every step full (output identical to the model "
                             "without ClusCa). Higher = faster, less faithful."),
        io.Int.Input("warmup_steps", default=d.warmup_steps, min=0, max=MAX_WARMUP, step=1,
                     tooltip="The first steps always run in full (the layout of the image forms here)."),
        io.Int.Input("taylor_order", default=d.taylor_order, min=0, max=MAX_TAYLOR_ORDER, step=1,
                     tooltip="Order of the Taylor forecast of cached features. 0 = plain reuse (FORA), "
                             "1 = linear extrapolation (the reference default)."),
        io.Int.Input("clusters", default=d.clusters, min=0, max=MAX_CLUSTERS, step=1,
                     tooltip="Token clusters (K-means) per stream. On cached steps one random token per cluster "
                             "goes through the real MLP to refresh its cluster's cache. 0 = plain TaylorSeer "
                             "without spatial refresh."),
        io.Float.Input("propagation_ratio", default=d.propagation_ratio, min=0.0, max=1.0, step=0.001,
                       tooltip="How strongly a representative's fresh MLP output is blended into the cached "
                               "output of the other tokens of its cluster (gamma)."),
        io.Float.Input("start_percent", default=d.start_percent, min=0.0, max=1.0, step=0.01,
                       tooltip="Caching starts at this fraction of the schedule; steps before it run in full."),
        io.Float.Input("end_percent", default=d.end_percent, min=0.0, max=1.0, step=0.01,
                       tooltip="Caching ends at this fraction of the schedule; steps after it run in full."),
        io.Int.Input("seed", default=d.seed, min=0, max=0xFFFFFFFFFFFFFFFF, step=1, control_after_generate=False,
                     tooltip="Seed of ClusCa's own generator for choosing representative tokens and initial "
                             "clusters (the sampler's noise is never touched)."),
        io.Boolean.Input("cluster_per_frame", default=d.cluster_per_frame, optional=True,
                         tooltip="Video models: cluster every latent frame separately (the clusters count is per "
                                 "frame, so more tokens are refreshed). No effect on images."),
        io.Combo.Input("cache_dtype", options=list(CACHE_DTYPES), default=d.cache_dtype, optional=True,
                       tooltip="Precision of the cached features. auto = the model's compute dtype; bf16/fp16 halve "
                               "the cache memory of fp32 models; fp8 = every factor in float8 e4m3 with per-token scales (a quarter "
                               "of fp32); fp8-diff = the order-0 factor in the model's dtype, the differences in fp8; "
                               "int8 = every factor in int8 with per-token scales (as small as fp8, closer to the model's dtype); "
                               "int8-int4 = the order-0 factor in int8, the differences in 4 bits."),
        io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default=d.cache_device, optional=True,
                       tooltip="Where the cache lives. auto = with the model (fastest); cpu = offload to pinned host "
                               "memory with asynchronous copies (saves VRAM, costs transfer time on GPU)."),
        io.Combo.Input("memory_mode", options=list(MEMORY_MODES), default=d.memory_mode, optional=True,
                       tooltip="full = every block's attention and MLP outputs are cached (ClusCa). lite = only the "
                               "output of the whole block stack is cached and cached steps skip the blocks "
                               "(TaylorSeer-Lite): far less memory, no cluster refresh, lower fidelity."),
        io.Combo.Input("mode", options=list(MODES), default=d.mode, optional=True,
                       tooltip="clusca = the paper's refresh (fresh MLP outputs of one token per cluster blended "
                               "into the cluster's cache); clusca-error = each representative's forecast error "
                               "corrects its whole cluster; taylorseer = forecast only (clusters ignored); fora = "
                               "plain reuse of the last full step (order and clusters ignored); probe = "
                               "TaylorSeer's forecast, the representatives only measure its error."),
        io.Boolean.Input("verbose", default=d.verbose, optional=True,
                         tooltip="Log one line per cached step with the forecast error measured at the "
                                 "representative tokens (costs one GPU sync per step)."),
        io.Float.Input("target_speedup", default=d.target_speedup, min=0.0, max=50.0, step=0.1, optional=True,
                       tooltip="0 = off (full steps every fresh_interval). Otherwise the run spends steps / target "
                               "full steps, placed where the forecast error measured on the representative tokens "
                               "says they are needed (the speed-up controller)."),
        io.Float.Input("adaptive_threshold", default=d.adaptive_threshold, min=0.0, max=10.0, step=0.01,
                       optional=True,
                       tooltip="Error-adaptive schedule without a budget (0 = off): a cached step whose relative "
                               "forecast error at the representatives exceeds this makes the next step full. With "
                               "target_speedup it is the starting threshold (0 = 0.1)."),
        io.Combo.Input("preset", options=list(PRESETS), default=d.preset, optional=True,
                       tooltip="custom = use the settings on this node. quality / balanced / fast = settings "
                               "measured on this model family's reference model (docs/benchmarks.md); they "
                               "replace fresh_interval, warm-up, order, clusters, ratio, mode and the adaptive "
                               "schedule (the window, seed and memory inputs still apply)."),
    ]


class ApplyClusCa(io.ComfyNode):
    """Cluster-driven feature caching (ClusCa): a few full steps, the rest forecast per block with a cheap
    refresh of one token per cluster. Drop it between the model loader and the sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApplyClusCa",
            display_name="Apply ClusCa",
            category="ClusCa",
            description=("Speeds up diffusion transformers (FLUX.1, HunyuanVideo, DiT) with ClusCa: full computation "
                         "only every few steps; in between, every block's attention and MLP outputs are forecast "
                         "(TaylorSeer) and the MLP cache is refreshed from one real token per cluster. "
                         "Unsupported models pass through unchanged."),
            inputs=_inputs(),
            outputs=[io.Model.Output(tooltip="The model with ClusCa; connect it to the sampler.")],
            hidden=[io.Hidden.unique_id],
            is_deprecated=True,
        )

    @staticmethod
    def config_from(inputs: dict) -> ClusCaConfig:
        given = {k: v for k, v in inputs.items() if k in CONFIG_FIELDS and v is not None}
        if "propagation_ratio" in given:
            given["propagation_ratio"] = float(given["propagation_ratio"])
        for k in ("start_percent", "end_percent"):
            if k in given:
                given[k] = float(given[k])
        return DEFAULTS.with_changes(**given)

    @classmethod
    def validate_inputs(cls, **inputs):
        """Checked when the prompt is queued (values coming from links are checked again in execute)."""
        try:
            errors = cls.config_from(inputs).errors()
        except (TypeError, ValueError) as exc:
            return str(exc)
        return "; ".join(errors) if errors else True

    @classmethod
    def execute(cls, model, **inputs) -> io.NodeOutput:
        config = cls.config_from(inputs).validated()
        hidden = getattr(cls, "hidden", None)
        node_id = getattr(hidden, "unique_id", None) if hidden is not None else None
        return io.NodeOutput(apply_clusca(model, config, node_id=node_id, settings=legacy_settings))
