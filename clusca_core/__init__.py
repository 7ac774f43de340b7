"""ClusCa core: cluster-driven feature caching for diffusion transformers, in plain torch.

Nothing in this package imports ComfyUI; it is unit-tested on synthetic tensors. The ComfyUI integration
(`nodes/`) builds on these pieces:

- :mod:`.config`      -- the user-facing settings (:class:`ClusCaConfig`) and their validation
- :mod:`.schedule`    -- which steps run in full: the fixed, threshold and speed-up schedules (one interface),
                         and locating a sigma inside the sampler's schedule
- :mod:`.taylor`      -- TaylorSeer factor stacks (finite differences, Taylor prediction)
- :mod:`.kmeans`      -- batched K-means with warm start and empty-cluster re-seeding
- :mod:`.selection`   -- one random representative token per cluster (dedicated generator)
- :mod:`.propagation` -- the paper's blend of fresh values into a cached factor
- :mod:`.refresh`     -- the refresh rules (blend, error correction) a cached MLP branch applies
- :mod:`.slots`       -- what is cached for one conditioning slot
- :mod:`.plan`        -- the plan of one model call and the cache operations its blocks use
- :mod:`.run`         -- the state of one run: schedule, slots, statistics, summary
"""

from .config import ClusCaConfig
from .schedule import ErrorPrior, FixedSchedule, Schedule, SpeedupSchedule, StepLocator, ThresholdSchedule, build_full_step_mask
from .taylor import TaylorCache
from .kmeans import kmeans
from .selection import select_representatives
from .propagation import propagate_fresh

__all__ = [
    "ClusCaConfig",
    "StepLocator",
    "build_full_step_mask",
    "Schedule",
    "FixedSchedule",
    "ThresholdSchedule",
    "SpeedupSchedule",
    "ErrorPrior",
    "TaylorCache",
    "kmeans",
    "select_representatives",
    "propagate_fresh",
]
