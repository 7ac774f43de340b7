"""What a cached token-wise branch does with its representatives' fresh outputs: the refresh rules.

Both take one conditioning slot's cache of the branch (a :class:`~.taylor.TaylorCache`), the cluster of every
token (``labels`` (rows, N)), the representatives (``index`` (rows, K), ``valid`` (rows, K): whether the
cluster has a member), their fresh outputs and their forecasts ((rows, K, D) each).

- :func:`blend`: the paper's rule. Each fresh value replaces its token's cached order-0 factor and is blended
  into its cluster-mates' (``F0 <- (1 - gamma) F0 + gamma fresh``), persistently until the next full step.
- :func:`error_correction`: each representative's forecast error ``fresh - forecast`` is added to the forecast
  of its whole cluster (times ``weight``); the representatives get their fresh value; the cache is unchanged.
"""

from __future__ import annotations

import torch

from .propagation import propagate_fresh
from .tokens import gather_tokens, scatter_add_tokens_


def blend(cache, labels: torch.Tensor, index: torch.Tensor, fresh: torch.Tensor, gamma: float, device) -> None:
    """The paper's refresh of ``cache``'s order-0 factor, in place."""
    f0 = cache.order0_on(device)
    propagate_fresh(f0, labels, index, fresh, gamma)
    cache.write_order0(f0)


def error_correction(labels: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, error: torch.Tensor,
                     weight: float, like: torch.Tensor) -> torch.Tensor:
    """The correction to add (through the branch's gate) to the forecast of every token: ``weight`` times its
    cluster representative's error, and the representatives' own remaining ``(1 - weight)`` share, so they
    end up at their fresh value. ``like`` gives the shape and dtype (rows, N, D)."""
    error = error * valid.unsqueeze(-1)      # an empty cluster's stand-in representative counts once
    correction = gather_tokens(error * weight, labels) if weight > 0 else torch.zeros_like(like)
    if weight < 1.0:
        correction = scatter_add_tokens_(correction, index, error * (1.0 - weight))
    return correction
