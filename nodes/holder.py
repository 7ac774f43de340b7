"""The object ClusCa keeps in ``transformer_options``: settings between runs, run state during one."""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ..clusca_core.config import ClusCaConfig
from ..clusca_core.slots import RunState

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
    never references the model or tensors between runs, and deep copies (every later ``model.clone()``
    deep-copies ``transformer_options``) copy the settings only.
    """

    def __init__(self, config: ClusCaConfig, family_key: str, node_id: Optional[str] = None):
        self.config = config
        self.family_key = family_key
        #: the ApplyClusCa node that made this holder (for UI messages), when known
        self.node_id = node_id
        self.run: Optional[RunState] = None
        #: results of the last run made with this template: the summary dict and the image-token clusters
        self.last_summary: Optional[dict] = None
        self.last_clusters: Optional[dict] = None

    def clone(self) -> "ClusCaHolder":
        return ClusCaHolder(self.config, self.family_key, self.node_id)

    def __deepcopy__(self, memo):
        return self.clone()

    def start_run(self, sample_sigmas: torch.Tensor, model_sampling, family: str) -> Optional[RunState]:
        cfg = self.config
        if sample_sigmas is None or sample_sigmas.numel() < 2:
            return None
        start_sigma = float(model_sampling.percent_to_sigma(cfg.start_percent))
        end_sigma = float(model_sampling.percent_to_sigma(cfg.end_percent))
        cache_device = torch.device("cpu") if cfg.cache_device == "cpu" else None
        self.run = RunState(cfg, sample_sigmas, start_sigma=start_sigma, end_sigma=end_sigma, family=family,
                            cache_device=cache_device)
        return self.run

    def reset(self) -> None:
        if self.run is not None:
            self.run.release()
        self.run = None


def summary_line(summary: dict) -> str:
    toks = summary.get("tokens_per_cached_step") or {}
    tok_text = " + ".join(f"{v} {k}" for k, v in toks.items()) if toks else "0 (Taylor forecast only)"
    geo = summary.get("geometry") or {}
    geo_text = ", ".join(f"{k} {v}" for k, v in geo.items())
    return (f"ClusCa - {summary['family']}"
            + (f" ({geo_text})" if geo_text else "")
            + f": {summary['steps']} steps, {summary['full_steps']} full, {summary['cached_steps']} cached;"
            + f" tokens computed per cached step and block: {tok_text};"
            + f" estimated {summary['estimated_flops_speedup']:.2f}x fewer transformer FLOPs"
            + f" (schedule bound {summary['schedule_bound']:.2f}x); cache {format_bytes(summary['peak_cache_bytes'])}")
