"""What is cached for one conditioning *slot* during one run: its branches' Taylor factors, its token
clusters and its own generator.

A slot is one conditioning of the sampler (positive, negative, each area conditioning...), known by a key the
caller gives. Caches are kept per slot, so conditionings batched together or called one by one, and those
active for part of the schedule only, all keep their own history. Within a slot, every tensor is (rows,
tokens, features): each batch element is cached, clustered and refreshed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional

import torch

from .taylor import TaylorCache


@dataclass
class ClusterAssignment:
    """Token clusters of one stream of one slot, from the last full step."""
    labels: torch.Tensor          # (rows, N) int64, global cluster id of each token
    centroids: list               # per segment: (rows, K_s, D) float32, for the next warm start
    num_clusters: int             # total clusters over all segments

    @property
    def nbytes(self) -> int:
        return self.labels.numel() * self.labels.element_size() + sum(c.numel() * c.element_size() for c in self.centroids)


class SlotCache:
    """Everything cached for one conditioning slot during one sampling run.

    ``seed`` seeds the slot's own generator (representative tokens, first clustering): the draws of a slot do
    not depend on which other slots share its model calls, so conditionings batched together, called one by
    one, or run in parallel threads on several devices give the same result.
    """

    def __init__(self, fingerprint: Hashable, seed: int = 0):
        self.fingerprint = fingerprint
        self.seed = seed
        self.branches: dict[Hashable, TaylorCache] = {}
        self.clusters: dict[str, ClusterAssignment] = {}
        self.position: Optional[float] = None
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    @property
    def ready(self) -> bool:
        """Whether a full step recorded anything for this slot (a cached step needs that)."""
        return self.position is not None

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.branches.values()) + sum(c.nbytes for c in self.clusters.values())

    def clear(self) -> None:
        self.branches.clear()
        self.clusters.clear()
        self.position = None
        self._generators.clear()
