"""Batched K-means (Lloyd) on token features, warm-startable, with empty clusters re-seeded.

Distance: ``"l2"`` (squared Euclidean, computed with a matmul -- the default, fast and memory-light) or
``"l1"`` (``torch.cdist(p=1)``, as the ClusCa reference code). Centroids are cluster means either way.
Unlike the reference, an empty cluster never gets a zero centroid: it is re-seeded with the token that is
farthest from its own centroid, so every cluster keeps at least one member whenever there are at least as
many tokens as clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .tokens import gather_tokens


@dataclass
class KMeansResult:
    labels: torch.Tensor      # (B, N) int64, cluster of each token
    centroids: torch.Tensor   # (B, K, D) float32
    counts: torch.Tensor      # (B, K) int64, members per cluster
    iterations: int


def pairwise_distance(x: torch.Tensor, c: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """(B, N, D) x (B, K, D) -> (B, N, K) distances (squared for l2)."""
    if distance == "l1":
        return torch.cdist(x, c, p=1)
    if distance != "l2":
        raise ValueError(f"unknown distance {distance!r}")
    x2 = (x * x).sum(-1, keepdim=True)
    c2 = (c * c).sum(-1).unsqueeze(1)
    return (x2 + c2).baddbmm_(x, c.transpose(1, 2), beta=1.0, alpha=-2.0).clamp_min_(0.0)


def kmeans_pp_init(x: torch.Tensor, k: int, generator: Optional[torch.Generator], distance: str = "l2") -> torch.Tensor:
    """k-means++ seeding (batched): the first centroid is a random token, each next one a token drawn with
    probability proportional to its distance to the nearest centroid chosen so far."""
    b, n, _ = x.shape
    rows = torch.arange(b, device=x.device)
    first = torch.randint(0, n, (b,), generator=generator, device=x.device)
    chosen = [first]
    nearest = pairwise_distance(x, x[rows, first].unsqueeze(1), distance).squeeze(2)
    for _ in range(1, k):
        weights = nearest.clamp_min(0.0)
        total = weights.sum(dim=1, keepdim=True)
        weights = torch.where(total > 0, weights, torch.ones_like(weights))
        nxt = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        chosen.append(nxt)
        nearest = torch.minimum(nearest, pairwise_distance(x, x[rows, nxt].unsqueeze(1), distance).squeeze(2))
    return gather_tokens(x, torch.stack(chosen, dim=1))


def kmeans(x: torch.Tensor, k: int, iters: int = 10, init: Optional[torch.Tensor] = None,
           generator: Optional[torch.Generator] = None, distance: str = "l2", tol: float = 1e-4) -> KMeansResult:
    """Cluster each batch element's tokens into ``min(k, N)`` clusters.

    ``init`` (B, K, D) warm-starts the centroids (ignored when its shape does not fit); otherwise they are
    seeded with k-means++ drawn from ``generator`` (the reference code uses K random tokens, which often
    merges clusters; warm starts make the seeding matter at the first full step only). Stops early when the centroids move
    less than ``tol`` (relative).
    """
    if x.ndim != 3:
        raise ValueError("x must be (batch, tokens, features)")
    b, n, d = x.shape
    k = int(min(k, n))
    if k <= 0:
        raise ValueError("k must be >= 1 and there must be at least one token")
    xf = x.detach().float()
    if init is not None and tuple(init.shape) == (b, k, d):
        centroids = init.detach().to(device=xf.device, dtype=torch.float32).clone()
    else:
        centroids = kmeans_pp_init(xf, k, generator, distance)

    expand_idx = None
    it = 0
    for it in range(1, iters + 1):
        dist = pairwise_distance(xf, centroids, distance)
        min_dist, labels = dist.min(dim=2)
        counts = torch.zeros((b, k), device=xf.device, dtype=torch.float32)
        counts.scatter_add_(1, labels, torch.ones_like(min_dist))
        expand_idx = labels.unsqueeze(-1).expand(-1, -1, d)
        sums = torch.zeros_like(centroids).scatter_add_(1, expand_idx, xf)
        new = sums / counts.clamp_min(1.0).unsqueeze(-1)
        empty = counts == 0
        if bool(empty.any()):
            # Re-seed each empty cluster with one of the tokens farthest from their centroids.
            far = min_dist.topk(k, dim=1).indices                      # (B, K) candidates, farthest first
            rank = (empty.long().cumsum(dim=1) - 1).clamp_min(0)       # j-th empty cluster takes j-th candidate
            pick = torch.gather(far, 1, rank)                          # (B, K)
            seeds = gather_tokens(xf, pick)
            new = torch.where(empty.unsqueeze(-1), seeds, new)
        converged = bool(torch.allclose(new, centroids, rtol=tol, atol=1e-6))
        centroids = new
        if converged:
            break
    dist = pairwise_distance(xf, centroids, distance)
    labels = dist.argmin(dim=2)
    counts = torch.zeros((b, k), device=xf.device, dtype=torch.long)
    counts.scatter_add_(1, labels, torch.ones_like(labels))
    return KMeansResult(labels=labels, centroids=centroids, counts=counts, iterations=it)
