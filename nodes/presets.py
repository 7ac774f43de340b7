"""The named presets per model family, in one table that the node and the benchmarks both read.

quality / balanced / fast are error-adaptive schedules whose thresholds were measured per family on its
reference model (``python -m benchmarks.suite --part fidelity --part presets``, ``docs/benchmarks.md``);
they apply on top of the family's reference settings. A family without measured presets has none: the node
then says so and uses its inputs as given.
"""

from __future__ import annotations

#: family key -> (quality, balanced, fast) thresholds of the error-adaptive schedule
ADAPTIVE_THRESHOLDS = {
    "flux": (0.05, 0.08, 0.12),
    "hunyuan_video": (0.03, 0.05, 0.08),
    "dit": (0.03, 0.05, 0.08),
}
PRESET_NAMES = ("quality", "balanced", "fast")


def presets_for(family_key: str) -> dict:
    """{preset name: settings} of a family (empty when none were measured)."""
    thresholds = ADAPTIVE_THRESHOLDS.get(family_key)
    if thresholds is None:
        return {}
    return {name: {"mode": "clusca", "adaptive_threshold": t, "target_speedup": 0.0}
            for name, t in zip(PRESET_NAMES, thresholds)}


#: family key -> settings around the speed-up controller that differ from ``nodes.settings.BEST`` (measured on
#: the family's reference model, docs/benchmarks.md)
BEST_BY_FAMILY: dict = {}


def best_for(family_key: str) -> dict:
    """The family's measured deviations from the generic best settings of the speed-up controller."""
    return dict(BEST_BY_FAMILY.get(family_key, {}))
