"""ClusCa core: cluster-driven feature caching for diffusion transformers, in plain torch.

Nothing in this package imports ComfyUI; it is unit-tested on synthetic tensors. The ComfyUI integration
(`nodes/`) builds on these pieces:

- :mod:`.config`      -- the user-facing settings (:class:`ClusCaConfig`) and their validation
- :mod:`.schedule`    -- which sampler steps run in full, and locating a sigma inside the schedule
- :mod:`.taylor`      -- TaylorSeer factor stacks (finite differences, Taylor prediction)
- :mod:`.kmeans`      -- batched K-means with warm start and empty-cluster re-seeding
- :mod:`.selection`   -- one random representative token per cluster (dedicated generator)
- :mod:`.propagation` -- the ClusCa refresh of a cached MLP output from its representatives
- :mod:`.slots`       -- the cache of one conditioning slot, and the per-call plan blocks work through
"""

from .config import ClusCaConfig
from .schedule import StepLocator, build_full_step_mask
from .taylor import TaylorCache
from .kmeans import kmeans
from .selection import select_representatives
from .propagation import propagate_fresh

__all__ = [
    "ClusCaConfig",
    "StepLocator",
    "build_full_step_mask",
    "TaylorCache",
    "kmeans",
    "select_representatives",
    "propagate_fresh",
]
