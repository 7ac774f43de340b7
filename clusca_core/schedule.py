"""Which sampler steps run in full, and where a model call's sigma sits in the sampler's schedule.

Every schedule is a small object with one interface (:class:`Schedule`): ``is_full(step)`` decides a step,
``full_done(step)`` records a full step, ``observe(step, error)`` hands it a cached step's forecast error as
the representatives measured it. :class:`FixedSchedule` is the reference code's counter schedule,
:class:`ThresholdSchedule` the error-adaptive one with a threshold, :class:`SpeedupSchedule` the controller
that takes a speed-up: it spends ``steps / speed-up`` full steps where the measured errors say they help most.
"""

from __future__ import annotations

import math
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


class Schedule:
    """Decides which steps of one run are full. ``forced[i]`` marks steps that are full whatever the schedule
    (the first step, the warm-up, steps outside the caching window).

    ``is_full(step)`` is asked once per step, before its first model call (every call of a step gets that
    answer); ``full_done(step)`` follows each step that ran in full; ``observe(step, error)`` follows a cached
    step with the forecast error measured at the representatives (the mean over the step's conditionings),
    for the schedules that use it (``needs_probe``).
    """

    needs_probe = False

    def __init__(self, forced: Sequence[bool]):
        self.forced = [bool(f) for f in forced]
        self.num_steps = len(self.forced)
        self.full: set = set()
        self.last_full: Optional[int] = None

    def is_full(self, step: int) -> bool:
        raise NotImplementedError

    def full_done(self, step: int) -> None:
        self.full.add(step)
        if self.last_full is None or step > self.last_full:
            self.last_full = step

    def observe(self, step: int, error: float) -> None:
        pass

    @property
    def last_cached_step(self) -> int:
        """Full steps after this one have nothing left to feed: they run without recording anything."""
        return self.num_steps

    @property
    def planned_full(self) -> Optional[int]:
        """The full steps this schedule plans for the run (None when it cannot say in advance)."""
        return None

    def describe(self) -> str:
        return type(self).__name__


class FixedSchedule(Schedule):
    """The reference code's counter schedule (:func:`build_full_step_mask`): a full step every ``interval``
    steps after the warm-up, and every forced step."""

    def __init__(self, forced: Sequence[bool], warmup_steps: int, interval: int, window: Sequence[bool]):
        super().__init__(forced)
        self.interval = interval
        self.mask = build_full_step_mask(self.num_steps, warmup_steps, interval, window)

    def is_full(self, step: int) -> bool:
        return self.mask[step]

    @property
    def last_cached_step(self) -> int:
        cached = [i for i, full in enumerate(self.mask) if not full]
        return cached[-1] if cached else -1

    @property
    def planned_full(self) -> int:
        return sum(self.mask)

    def describe(self) -> str:
        return f"{self.planned_full} of {self.num_steps} steps planned full (interval {self.interval})"


class ThresholdSchedule(Schedule):
    """The error-adaptive schedule with a fixed threshold: a cached step whose error exceeds ``threshold``
    makes the next step full; at least one cached step follows every full step, at most ``ceiling - 1`` do."""

    needs_probe = True

    def __init__(self, forced: Sequence[bool], threshold: float, ceiling: int):
        super().__init__(forced)
        self.threshold = threshold
        self.ceiling = ceiling
        self.requested_after: Optional[int] = None

    def is_full(self, step: int) -> bool:
        if self.forced[step] or self.last_full is None:
            return True
        distance = step - self.last_full
        if distance <= 0 or distance >= self.ceiling:
            return True
        requested = self.requested_after is not None and step > self.requested_after
        return requested and distance >= 2

    def full_done(self, step: int) -> None:
        super().full_done(step)
        if step >= self.last_full:
            self.requested_after = None

    def observe(self, step: int, error: float) -> None:
        if error > self.threshold:
            self.requested_after = step

    def describe(self) -> str:
        return (f"error-adaptive schedule over {self.num_steps} steps (threshold {self.threshold:g}, at most "
                f"{self.ceiling - 1} cached steps in a row)")


class SpeedupSchedule(Schedule):
    """The speed-up controller: the run spends ``round(steps / speedup)`` full steps (forced ones included)
    and the forecast error measured at the representatives decides where they go.

    It runs the error-adaptive rule (a cached step whose error exceeds a threshold makes the next step
    full) with the threshold solved, at every step, so that the rule would spend exactly the full steps left
    on the steps left. That needs the errors of steps not seen yet: the error of a cached step ``d`` steps
    after a full one is modelled as ``rate(t) * d``; the rates seen so far are fitted with a log-linear trend
    in the step index (recent steps weigh more) and extrapolated, within bounds, to the end of the run. An
    error that keeps rising (e.g. video models late in the schedule) thus saves full steps for later; one
    that falls (FLUX early) spends them early. The budget is kept exactly: steps are forced full when the
    full steps left equal the steps left, and none are taken once it is spent.
    """

    needs_probe = True
    #: weight half-life, in steps, of past rates in the trend fit
    HALF_LIFE = 8.0
    #: the extrapolated rate at the end of the run stays within this factor of the current one
    MAX_TREND = 4.0
    #: at most this many times the mean spacing of the budget between full steps
    MAX_GAP = 3.0

    def __init__(self, forced: Sequence[bool], speedup: float):
        super().__init__(forced)
        self.speedup = float(speedup)
        self.budget = max(1, min(self.num_steps, round(self.num_steps / self.speedup)))
        self.errors: dict = {}          # step -> (distance from the last full step, error)
        self.thresholds: dict = {}      # step -> the threshold solved at that step (for reports)

    @property
    def planned_full(self) -> int:
        return max(self.budget, sum(self.forced))

    def describe(self) -> str:
        return (f"speed-up {self.speedup:g}x over {self.num_steps} steps = {self.planned_full} full steps, placed "
                f"by the forecast error measured at the representatives")

    def observe(self, step: int, error: float) -> None:
        if self.last_full is not None and step > self.last_full and math.isfinite(error):
            self.errors[step] = (step - self.last_full, max(float(error), 1e-6))

    def is_full(self, step: int) -> bool:
        if self.forced[step] or self.last_full is None:
            return True
        distance = step - self.last_full
        if distance <= 0:
            return True
        free = [i for i in range(step, self.num_steps) if not self.forced[i]]
        left = self.budget - len(self.full) - sum(self.forced[step + 1:])
        if left <= 0:
            return False
        if left >= len(free):
            return True
        if distance < 2:
            return False                     # one cached step first: it measures the error
        gap = len(free) / left
        if distance >= max(2.0, self.MAX_GAP * gap):
            return True
        last = self.errors.get(step - 1)
        if last is None:
            return distance >= gap
        tau = self.threshold(step, free, left)
        self.thresholds[step] = tau
        return last[1] > tau

    # -- the threshold that spends the budget ---------------------------------------------------------
    def rates(self, steps: Sequence[int]) -> list:
        """Predicted error rates (error per step of distance) at ``steps``, from the trend of the rates seen."""
        seen = sorted(self.errors.items())
        now = seen[-1][0]
        ws, xs, ys = [], [], []
        for t, (d, e) in seen:
            ws.append(0.5 ** ((now - t) / self.HALF_LIFE))
            xs.append(float(t))
            ys.append(math.log(e / d))
        sw = sum(ws)
        mx = sum(w * x for w, x in zip(ws, xs)) / sw
        my = sum(w * y for w, y in zip(ws, ys)) / sw
        sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
        slope = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / sxx if sxx > 1e-9 else 0.0
        span = max(self.num_steps - now, 1)
        bound = math.log(self.MAX_TREND) / span
        slope = min(max(slope, -bound), bound)
        level = my + slope * (now - mx)
        return [math.exp(level + slope * (t - now)) for t in steps]

    def threshold(self, step: int, free: Sequence[int], left: int) -> float:
        """The threshold at which the rule, on the predicted rates, spends ``left`` full steps on ``free``."""
        rates = self.rates(free)

        def spent(tau: float) -> float:
            # after a full step, cached steps follow until one's error (r per step of distance) exceeds tau,
            # then the next step is full: an interval of about tau / r + 2 steps, r / (tau + 2 r) per step
            return sum(r / (tau + 2 * r) for r in rates)

        lo, hi = 1e-8, 1e4
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            if spent(mid) > left:
                lo = mid
            else:
                hi = mid
        return math.sqrt(lo * hi)


__all__ = ["build_full_step_mask", "StepLocator", "Schedule", "FixedSchedule", "ThresholdSchedule",
           "SpeedupSchedule"]
