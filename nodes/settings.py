"""How the nodes' inputs become the settings of a run on a given model family.

- :func:`controller_settings`: the basic node and the advanced node's defaults: the speed-up controller with the
  measured best settings around it (``BEST``, per-family entries in ``nodes/presets.py``).
- :func:`paper_settings`: the reference code's exact fixed schedule and settings for the family (the named
  choice "paper" of the advanced node).
- :func:`legacy_settings`: what the deprecated ``ApplyClusCa`` node always did (its presets, and the family's
  reference settings when five inputs are left at their defaults), so saved graphs keep their results.
"""

from __future__ import annotations

import logging

from ..clusca_core.config import ClusCaConfig
from .presets import best_for, presets_for

log = logging.getLogger("ClusCa")

#: the speed-up the nodes ask for by default (the measured best trade-off; docs/benchmarks.md)
DEFAULT_SPEEDUP = 4.0
#: the settings around the speed-up controller measured best on the reference models (docs/benchmarks.md)
BEST = dict(mode="clusca", warmup_steps=2, taylor_order=1, clusters=16, propagation_ratio=0.005, fresh_interval=5)
#: the reference code's FLUX settings: the paper's schedule for families without reference code of their own
PAPER = dict(fresh_interval=5, warmup_steps=3, taylor_order=1, clusters=16, propagation_ratio=0.005)
#: the advanced node's schedule choices
SCHEDULES = ("speed-up", "error threshold", "fixed interval", "paper")
#: the settings the legacy node's family reference values replace when all of them are left at their defaults
REFERENCE_FIELDS = ("fresh_interval", "warmup_steps", "taylor_order", "clusters", "propagation_ratio")


def controller_settings(adapter, config: ClusCaConfig) -> ClusCaConfig:
    """The family's measured best settings for what the basic node leaves open."""
    family = best_for(adapter.key)
    if family:
        config = config.with_changes(**family)
    return config


def paper_settings(adapter, config: ClusCaConfig) -> ClusCaConfig:
    """The paper's fixed schedule with the family's reference settings (the reference code's FLUX settings
    for families it has no code for)."""
    settings = {**PAPER, **adapter.reference_settings}
    log.info("ClusCa - %s: the paper's schedule and settings %s", adapter.family, settings)
    return config.with_changes(**settings, mode="clusca", adaptive_threshold=0.0, target_speedup=0.0)


def legacy_settings(adapter, config: ClusCaConfig) -> ClusCaConfig:
    """The deprecated Apply ClusCa node's rules, unchanged: a named preset replaces the schedule settings;
    with five inputs at their defaults the family's reference settings apply."""
    if config.preset != "custom":
        settings = presets_for(adapter.key).get(config.preset)
        if settings is None:
            log.warning("ClusCa - %s has no preset %r; the node's inputs are used as given.", adapter.family,
                        config.preset)
            return config
        log.info("ClusCa - %s: preset %s: %s", adapter.family, config.preset, settings)
        if settings.get("target_speedup"):
            # a speed-up preset: the basic node at that speed-up
            return controller_settings(adapter, config.with_changes(**BEST, **settings))
        return config.with_changes(**{**adapter.reference_settings, **settings})
    if adapter.reference_settings and all(getattr(config, k) == getattr(ClusCaConfig(), k) for k in REFERENCE_FIELDS):
        log.info("ClusCa - %s: inputs left at their defaults, using the family's reference settings %s",
                 adapter.family, adapter.reference_settings)
        return config.with_changes(**adapter.reference_settings)
    return config
