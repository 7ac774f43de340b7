"""Which sampler steps run in full, and where a model call's sigma sits in the sampler's schedule."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def build_full_step_mask(num_steps: int, warmup_steps: int, fresh_interval: int,
                         in_window: Optional[Sequence[bool]] = None) -> list[bool]:
    """Full (True) or cached (False) for each step index, following the reference counter schedule.

    A step is full when it is one of the first ``warmup_steps`` (step 0 always is: there is nothing to
    forecast from yet), when it lies outside the caching window, or when the counter of cached steps since
    the last full step has reached ``fresh_interval - 1``. Every full step resets the counter.
    50 steps, warm-up 3, interval 5 give the reference's 12 full steps {0, 1, 2, 7, 12, ..., 47}.
    """
    if num_steps < 0:
        raise ValueError("num_steps must be >= 0")
    if fresh_interval < 1:
        raise ValueError("fresh_interval must be >= 1")
    if in_window is not None and len(in_window) < num_steps:
        raise ValueError("in_window must have one entry per step")
    mask = []
    counter = 0
    for i in range(num_steps):
        window = True if in_window is None else bool(in_window[i])
        if i == 0 or i < warmup_steps or not window or counter >= fresh_interval - 1:
            mask.append(True)
            counter = 0
        else:
            mask.append(False)
            counter += 1
    return mask


class StepLocator:
    """Maps the sigma of a model call to a position in the sampler's schedule.

    The position is a float: ``i`` when sigma equals ``sample_sigmas[i]`` and ``i + f`` (0 < f < 1) when it
    lies between ``sample_sigmas[i]`` and ``sample_sigmas[i + 1]``, as the extra evaluations of multi-stage
    samplers (Heun's corrector lands exactly on the next sigma; dpm_2 and friends land in between) do.
    Split cond/uncond calls at the same sigma get the same position, so the schedule stays right whatever
    the number of model calls per step.
    """

    def __init__(self, sample_sigmas: torch.Tensor | Sequence[float], rel_tol: float = 1e-5):
        if isinstance(sample_sigmas, torch.Tensor):
            values = [float(v) for v in sample_sigmas.detach().flatten().cpu().tolist()]
        else:
            values = [float(v) for v in sample_sigmas]
        if len(values) < 2:
            raise ValueError("a schedule needs at least two sigmas")
        self.sigmas = values
        self.num_steps = len(values) - 1
        self.rel_tol = rel_tol
        self._last = 0.0

    def _close(self, a: float, b: float) -> bool:
        return abs(a - b) <= self.rel_tol * max(abs(a), abs(b), 1e-12)

    def locate(self, sigma: float) -> float:
        s = float(sigma)
        values = self.sigmas
        exact = [i for i, v in enumerate(values) if self._close(v, s)]
        if exact:
            later = [i for i in exact if i >= int(self._last)]
            pos = float(later[0] if later else exact[0])
        else:
            pos = None
            for i in range(self.num_steps):
                a, b = values[i], values[i + 1]
                if (a - s) * (b - s) <= 0 and a != b:
                    pos = i + (a - s) / (a - b)
                    if pos >= int(self._last):
                        break
            if pos is None:
                # Outside the schedule: before its start or past its end.
                pos = 0.0 if abs(s - values[0]) <= abs(s - values[-1]) else float(self.num_steps)
        self._last = pos
        return pos

    def step_index(self, position: float) -> int:
        """The integer step a position belongs to (its interval's start), clamped to the schedule."""
        return min(max(int(position + 1e-6), 0), max(self.num_steps - 1, 0))

    def window_mask(self, start_sigma: float, end_sigma: float) -> list[bool]:
        """For each step: is its sigma inside (end_sigma, start_sigma]? (ComfyUI's percent-window rule.)"""
        return [(v <= start_sigma) and (v > end_sigma) for v in self.sigmas[:-1]]


__all__ = ["build_full_step_mask", "StepLocator"]
