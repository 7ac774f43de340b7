"""The object ClusCa keeps in ``transformer_options``: settings between runs, run state during one."""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ..clusca_core.config import ClusCaConfig
from ..clusca_core.run import RunState

KEY = "clusca"
log = logging.getLogger("ClusCa")


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0
    return f"{n} B"


class ClusCaHolder:
    """Settings of one ClusCa node plus, while a sampler runs, that run's state.

    The copy stored on the patched model is a template: every sampling run works on a ``clone()`` (fresh
    state) and ``reset()``s it in a ``finally``, so nothing leaks between runs, samplers or graphs. The holder
    never references the model or tensors between runs. A clone of the patched *model* gets a ``child()``
    holder (ComfyUI's ``ON_CLONE``): its own results, and its runs also tell its parents' cluster maps (a map
    fed Apply ClusCa's output shows the last run of a model derived from it, e.g. through a LoRA loader), while
    sibling clones never see each other's runs.
    """

    def __init__(self, config: ClusCaConfig, family_key: str, node_id: Optional[str] = None):
        self.config = config
        self.family_key = family_key
        #: the Apply ClusCa node that made this holder (for UI messages), when known
        self.node_id = node_id
        self.run: Optional[RunState] = None
        #: this run's image-token clusters of its last clustering (per-run holders only)
        self.run_clusters: Optional[dict] = None
        #: results of the last run made with this template: the summary dict and the image-token clusters
        self.last_summary: Optional[dict] = None
        self.last_clusters: Optional[dict] = None
        #: the clusters of the last run made with a model cloned from this one
        self.descendant_clusters: Optional[dict] = None
        #: the holders of the models this one's model was cloned from, nearest first
        self.parents: tuple = ()

    def clone(self) -> "ClusCaHolder":
        """The same settings, no results (a run's working copy, or a deep copy)."""
        return ClusCaHolder(self.config, self.family_key, self.node_id)

    def child(self) -> "ClusCaHolder":
        """The holder of a model cloned from this holder's model."""
        h = self.clone()
        h.parents = (self,) + self.parents
        return h

    def __deepcopy__(self, memo):
        return self.clone()

    def publish(self, summary: dict, clusters: Optional[dict]) -> None:
        """Keep a finished run's results here and tell the parents' cluster maps."""
        self.last_summary = summary
        self.last_clusters = clusters
        if clusters is not None:
            for parent in self.parents:
                parent.descendant_clusters = clusters

    def start_run(self, sample_sigmas: torch.Tensor, model_sampling, family: str,
                  error_prior=None) -> Optional[RunState]:
        cfg = self.config
        if sample_sigmas is None or sample_sigmas.numel() < 2:
            return None
        start_sigma = float(model_sampling.percent_to_sigma(cfg.start_percent))
        end_sigma = float(model_sampling.percent_to_sigma(cfg.end_percent))
        cache_device = torch.device("cpu") if cfg.cache_device == "cpu" else None
        # a run that starts below the model's largest sigma continues a schedule (a second sampler, e.g. the
        # low-noise expert of Wan 2.2, or image-to-image): its structure is already there
        top = float(model_sampling.sigma_max)
        continuation = float(sample_sigmas.flatten()[0]) < top * (1 - 1e-4)
        self.run = RunState(cfg, sample_sigmas, start_sigma=start_sigma, end_sigma=end_sigma, family=family,
                            cache_device=cache_device, continuation=continuation, error_prior=error_prior)
        self.run_clusters = None
        return self.run

    def reset(self) -> None:
        if self.run is not None:
            self.run.release()
        self.run = None
        self.run_clusters = None


def summary_line(summary: dict) -> str:
    toks = summary.get("tokens_per_cached_step") or {}
    tok_text = " + ".join(f"{v} {k}" for k, v in toks.items()) if toks else "0 (Taylor forecast only)"
    geo = summary.get("geometry") or {}
    geo_text = ", ".join(f"{k} {v}" for k, v in geo.items())
    method = summary.get("method")
    return (f"ClusCa - {summary['family']}"
            + (f" [{method}]" if method and method != "ClusCa" else "")
            + (f" ({geo_text})" if geo_text else "")
            + f": {summary['steps']} steps, {summary['full_steps']} full, {summary['cached_steps']} cached;"
            + (f" speed-up asked {summary['speedup_asked']:g}x, reached {summary['speedup_reached']:.2f}x;"
               if summary.get("speedup_asked") else "")
            + f" tokens computed per cached step and block: {tok_text};"
            + f" estimated {summary['estimated_flops_speedup']:.2f}x fewer transformer FLOPs"
            + f" (schedule bound {summary['schedule_bound']:.2f}x); cache {format_bytes(summary['peak_cache_bytes'])}")
