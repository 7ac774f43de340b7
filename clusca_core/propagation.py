"""The ClusCa spatial refresh of a cached branch output."""

from __future__ import annotations

import torch

from .tokens import gather_tokens, scatter_tokens_


def propagate_fresh(f0: torch.Tensor, labels: torch.Tensor, rep_index: torch.Tensor, fresh: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """Refresh the order-0 factor ``f0`` (B, N, D) in place from the representatives' fresh values.

    For every token i of cluster c with representative r_c: ``F0_i <- (1 - gamma) F0_i + gamma * fresh_c``;
    each representative's own entry becomes its fresh value exactly. ``labels`` (B, N) gives each token's
    cluster, ``rep_index`` (B, K) each cluster's representative and ``fresh`` (B, K, D) their fresh values
    (cluster c's at position c). The blend is computed in float32 whatever the cache dtype. Returns ``f0``.
    """
    if gamma > 0.0:
        target = gather_tokens(fresh, labels)
        if f0.dtype == torch.float32:
            f0.lerp_(target.float(), gamma)
        else:
            f0.copy_(torch.lerp(f0.float(), target.float(), gamma))
    return scatter_tokens_(f0, rep_index, fresh)
