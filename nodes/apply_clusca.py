"""The ``ApplyClusCa`` node: MODEL in, MODEL with ClusCa out."""

from __future__ import annotations

from comfy_api.latest import io

from ..clusca_core.config import MAX_CLUSTERS, MAX_INTERVAL, MAX_TAYLOR_ORDER, MAX_WARMUP, ClusCaConfig
from .patching import apply_clusca

DEFAULTS = ClusCaConfig()


class ApplyClusCa(io.ComfyNode):
    """Cluster-driven feature caching (ClusCa): a few full steps, the rest forecast per block with a cheap
    refresh of one token per cluster. Drop it between the model loader and the sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        d = DEFAULTS
        return io.Schema(
            node_id="ApplyClusCa",
            display_name="Apply ClusCa",
            category="ClusCa",
            description=("Speeds up diffusion transformers (FLUX.1, HunyuanVideo, DiT) with ClusCa: full computation only every "
                         "few steps; in between, every block's attention and MLP outputs are forecast "
                         "(TaylorSeer) and the MLP cache is refreshed from one real token per cluster. "
                         "Unsupported models pass through unchanged."),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (from a model loader)."),
                io.Int.Input("fresh_interval", default=d.fresh_interval, min=1, max=MAX_INTERVAL, step=1,
                             tooltip="A full step runs every N steps (after the warm-up); the steps in between "
                                     "are forecast from the cache. 1 = every step full (output identical to "
                                     "the model without ClusCa). Higher = faster, less faithful."),
                io.Int.Input("warmup_steps", default=d.warmup_steps, min=0, max=MAX_WARMUP, step=1,
                             tooltip="The first steps always run in full (the layout of the image forms here)."),
                io.Int.Input("taylor_order", default=d.taylor_order, min=0, max=MAX_TAYLOR_ORDER, step=1,
                             tooltip="Order of the Taylor forecast of cached features. 0 = plain reuse (FORA), "
                                     "1 = linear extrapolation (the reference default)."),
                io.Int.Input("clusters", default=d.clusters, min=0, max=MAX_CLUSTERS, step=1,
                             tooltip="Token clusters (K-means) per stream. On cached steps one random token per "
                                     "cluster goes through the real MLP to refresh its cluster's cache. "
                                     "0 = plain TaylorSeer without spatial refresh."),
                io.Float.Input("propagation_ratio", default=d.propagation_ratio, min=0.0, max=1.0, step=0.001,
                               tooltip="How strongly a representative's fresh MLP output is blended into the "
                                       "cached output of the other tokens of its cluster (gamma)."),
                io.Float.Input("start_percent", default=d.start_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Caching starts at this fraction of the schedule; steps before it run in full."),
                io.Float.Input("end_percent", default=d.end_percent, min=0.0, max=1.0, step=0.01,
                               tooltip="Caching ends at this fraction of the schedule; steps after it run in full."),
                io.Int.Input("seed", default=d.seed, min=0, max=0xFFFFFFFFFFFFFFFF, step=1,
                             control_after_generate=False,
                             tooltip="Seed of ClusCa's own generator for choosing representative tokens and "
                                     "initial clusters (the sampler's noise is never touched)."),
                io.Boolean.Input("cluster_per_frame", default=d.cluster_per_frame, optional=True,
                                 tooltip="Video models: cluster every latent frame separately (the clusters count "
                                         "is per frame, so more tokens are refreshed). No effect on images."),
            ],
            outputs=[io.Model.Output(tooltip="The model with ClusCa; connect it to the sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, fresh_interval=None, warmup_steps=None, taylor_order=None, clusters=None,
                        propagation_ratio=None, start_percent=None, end_percent=None, seed=None,
                        cluster_per_frame=None):
        """Checked when the prompt is queued; values coming from links are checked again in execute."""
        given = {k: v for k, v in dict(fresh_interval=fresh_interval, warmup_steps=warmup_steps,
                                       taylor_order=taylor_order, clusters=clusters,
                                       propagation_ratio=propagation_ratio, start_percent=start_percent,
                                       end_percent=end_percent, seed=seed,
                                       cluster_per_frame=cluster_per_frame).items() if v is not None}
        try:
            errors = DEFAULTS.with_changes(**given).errors()
        except TypeError as exc:
            return str(exc)
        if errors:
            return "; ".join(errors)
        return True

    @classmethod
    def execute(cls, model, fresh_interval=DEFAULTS.fresh_interval, warmup_steps=DEFAULTS.warmup_steps,
                taylor_order=DEFAULTS.taylor_order, clusters=DEFAULTS.clusters,
                propagation_ratio=DEFAULTS.propagation_ratio, start_percent=DEFAULTS.start_percent,
                end_percent=DEFAULTS.end_percent, seed=DEFAULTS.seed,
                cluster_per_frame=DEFAULTS.cluster_per_frame) -> io.NodeOutput:
        config = ClusCaConfig(fresh_interval=fresh_interval, warmup_steps=warmup_steps, taylor_order=taylor_order,
                              clusters=clusters, propagation_ratio=float(propagation_ratio),
                              start_percent=float(start_percent), end_percent=float(end_percent), seed=seed,
                              cluster_per_frame=bool(cluster_per_frame))
        hidden = getattr(cls, "hidden", None)
        node_id = getattr(hidden, "unique_id", None) if hidden is not None else None
        return io.NodeOutput(apply_clusca(model, config.validated(), node_id=node_id))
