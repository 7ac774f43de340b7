"""Choosing one representative token per cluster."""

from __future__ import annotations

from typing import Optional

import torch


def select_representatives(labels: torch.Tensor, num_clusters: int,
                           generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token drawn uniformly at random from each cluster, per batch element.

    ``labels`` is (B, N) with values in [0, num_clusters). Returns ``(index, valid)``, both (B, K): the token
    index of each cluster's representative, and whether the cluster has any member. An empty cluster's entry
    repeats a valid representative of the same row, so gathers stay in range and writes stay idempotent.
    The draw uses ``generator`` only (never the global RNG), so caching leaves the sampler's noise alone.
    """
    b, n = labels.shape
    device = labels.device
    scores = torch.rand((b, n), generator=generator, device=device)
    best = torch.full((b, num_clusters), -1.0, device=device)
    best.scatter_reduce_(1, labels, scores, reduce="amax", include_self=True)
    is_rep = scores == torch.gather(best, 1, labels)
    positions = torch.arange(n, device=device).expand(b, n)
    index = torch.full((b, num_clusters), -1, device=device, dtype=torch.long)
    index.scatter_reduce_(1, labels, torch.where(is_rep, positions, -1), reduce="amax", include_self=True)
    valid = index >= 0
    fallback = index.max(dim=1, keepdim=True).values.clamp_min(0)
    return torch.where(valid, index, fallback), valid
