"""The caching methods the benchmark compares, as ways to turn a MODEL into the MODEL a sampler gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: per family, the reference settings ClusCa uses when the node is left at its defaults (warm-up, order...)
FAMILY_SETTINGS = {
    "flux": dict(warmup_steps=3, taylor_order=1, clusters=16, propagation_ratio=0.005),
    "hunyuan_video": dict(warmup_steps=1, taylor_order=1, clusters=32, propagation_ratio=0.01),
    "dit": dict(warmup_steps=2, taylor_order=4, clusters=16, propagation_ratio=0.005),
}


@dataclass
class Method:
    """One configuration to benchmark. ``node`` = ApplyClusCa inputs (None: no ClusCa); ``easycache`` = a
    reuse threshold for ComfyUI's built-in EasyCache node instead."""
    name: str
    curve: str                       # the method family a plot draws as one curve
    node: Optional[dict] = None
    easycache: Optional[float] = None
    interval: Optional[int] = None
    extra: dict = field(default_factory=dict)

    def apply(self, model, family: str):
        if self.easycache is not None:
            from comfy_extras.nodes_easycache import EasyCacheNode
            return EasyCacheNode.execute(model=model, reuse_threshold=self.easycache, start_percent=0.15,
                                         end_percent=0.95, verbose=False).result[0]
        if self.node is None:
            return model
        import nodes
        # families without reference code of their own: the reference code's FLUX settings (as the paper choice)
        base = FAMILY_SETTINGS.get(family, FAMILY_SETTINGS["flux"])
        inputs = dict(self.node) if self.extra.get("node_defaults") else dict(base, **self.node)
        return nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=model, **inputs).result[0]


def interval_methods(intervals, modes=("fora", "taylorseer", "clusca", "clusca-error"),
                     lite_intervals=(3, 5)) -> list[Method]:
    out = []
    for n in intervals:
        for mode in modes:
            out.append(Method(f"{mode} N={n}", mode, node=dict(fresh_interval=n, mode=mode), interval=n))
        if n in lite_intervals:
            out.append(Method(f"lite N={n}", "lite (TaylorSeer-Lite)",
                              node=dict(fresh_interval=n, mode="taylorseer", memory_mode="lite"), interval=n))
    return out


def adaptive_methods(thresholds=(0.03, 0.05, 0.08, 0.12), modes=("clusca-error", "clusca"),
                     targets=(4.0, 5.0)) -> list[Method]:
    """The error-adaptive schedule: by threshold (per mode), and with a full-step budget (target speed-up)."""
    out = [Method(f"{mode} adaptive t={t:g}", f"{mode} adaptive", node=dict(fresh_interval=5, mode=mode,
                                                                        adaptive_threshold=t))
           for mode in modes for t in thresholds]
    out += [Method(f"clusca-error target {t:g}x", "clusca-error target speed-up",
                   node=dict(fresh_interval=5, mode="clusca-error", target_speedup=t)) for t in targets]
    return out


def easycache_methods(thresholds=(0.02, 0.05, 0.1)) -> list[Method]:
    return [Method(f"easycache t={t}", "easycache", easycache=t) for t in thresholds]


def preset_methods(presets=("quality", "balanced", "fast")) -> list[Method]:
    """The node as a user leaves it (defaults, i.e. the family's reference settings) and its named presets."""
    out = [Method("node defaults", "node defaults", node={}, extra={"node_defaults": True})]
    return out + [Method(f"preset {p}", "presets", node=dict(preset=p), extra={"node_defaults": True})
                  for p in presets]


UNCACHED = Method("uncached", "uncached")
