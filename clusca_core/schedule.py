"""Which sampler steps run in full, and where a model call's sigma sits in the sampler's schedule.

Every schedule is a small object with one interface (:class:`Schedule`): ``is_full(step)`` decides a step,
``full_done(step)`` records a full step, ``observe(step, error)`` hands it a cached step's forecast error as
the representatives measured it. :class:`FixedSchedule` is the reference code's counter schedule,
:class:`ThresholdSchedule` the error-adaptive one with a threshold, :class:`SpeedupSchedule` the controller
that takes a speed-up: it spends ``steps / speed-up`` full steps where the measured errors say they help most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ErrorPrior:
    """What a model family's forecast error looks like over a run, measured on its reference model
    (``python -m benchmarks.controller --part profile``): ``profile`` = the mean error one step after a full
    step over equal parts of the run (the shape matters, not the level: the controller scales it to the errors
    it measures), ``growth`` = how much more the error is two steps after a full step than one (relative)."""
    profile: tuple
    growth: float
    #: where it was measured (for the run's description)
    source: str = ""
    #: the run's last step runs in full (when it gives the output and the budget allows): measured per family
    final_full: bool = False
    #: full steps in a row in the second half of the run where the profile expects an error above the
    #: threshold (video models' last steps); measured per family
    late_runs: bool = False
    #: the share of the full-step budget spent as one run of full steps at the end of the run (when the last
    #: step gives the output): for families whose last steps matter most; measured per family
    final_share: float = 0.0

    def per_step(self, num_steps: int) -> list:
        """The profile at each step: linear between the centres of its parts, flat beyond them."""
        n = len(self.profile)
        out = []
        for i in range(num_steps):
            x = (i + 0.5) / max(num_steps, 1) * n - 0.5
            lo = min(max(int(math.floor(x)), 0), n - 1)
            hi = min(lo + 1, n - 1)
            f = min(max(x - lo, 0.0), 1.0)
            out.append(self.profile[lo] * (1 - f) + self.profile[hi] * f)
        return out


class SpeedupSchedule(Schedule):
    """The speed-up controller: the run spends ``round(steps / speedup)`` full steps (forced ones included)
    and the forecast error measured at the representatives decides where they go.

    It runs the error-adaptive rule (a cached step whose error exceeds a threshold makes the next step full,
    at least one cached step after each full one) with the threshold solved at every step so that the rule,
    simulated over the rest of the run, spends exactly the full steps left. The simulation needs the errors
    of the steps to come: a cached step ``d`` steps after a full one is expected to err by
    ``scale * prior[t] * (1 + growth * (d - 1))``. ``prior`` is the model family's error profile over the run
    (:class:`ErrorPrior`, measured on its reference model; flat when the family has none) and ``scale`` follows
    the errors this run actually measures (recent ones weigh more). With ``final`` (a run whose last step gives
    the output, its last sigma 0) and the prior's ``final_full`` the last step is full (with its
    ``final_share``, that share of the budget at the end): an error there reaches the output unattenuated, and
    measured on the reference models, schedules that end with a full step are far closer to the uncached output
    at the same budget. The budget is kept exactly: when the full steps left equal the steps
    left, those steps are full; once it is spent, none is.
    """

    needs_probe = True
    #: weight half-life, in steps, of past errors in the scale estimate
    HALF_LIFE = 8.0
    #: at most this many times the mean spacing of the budget between full steps
    MAX_GAP = 3.0
    #: with ``ErrorPrior.late_runs``: full steps in a row only from this fraction of the run on (early, on FLUX,
    #: they cost 3-5 dB)
    LATE = 0.5
    #: growth of the error with the distance from the last full step (per step, relative to distance 1)
    GROWTH = 0.5

    def __init__(self, forced: Sequence[bool], speedup: float, prior: Optional[ErrorPrior] = None,
                 final: bool = False):
        super().__init__(forced)
        self.speedup = float(speedup)
        self.budget = max(1, min(self.num_steps, round(self.num_steps / self.speedup)))
        # the run's last step gives the output: when the budget allows, the family's last steps run in full (the
        # last one with ``final_full``, the last ``final_share`` of the budget)
        tail = 0 if not final or prior is None else max(int(prior.final_full), round(prior.final_share * self.budget))
        for i in range(self.num_steps - 1, max(self.num_steps - tail, 0) - 1, -1):
            if self.budget > sum(self.forced) and not self.forced[i]:
                self.forced[i] = True
        # the expected error at distance 1 per step, up to a scale (flat without a profile)
        self.prior = [1.0] * self.num_steps if prior is None else [max(float(p), 1e-9)
                                                                   for p in prior.per_step(self.num_steps)]
        self.growth = self.GROWTH if prior is None else float(prior.growth)
        self.prior_source = "flat" if prior is None else (prior.source or "given")
        self.late_runs = prior is not None and prior.late_runs
        self.errors: dict = {}          # step -> (distance from the last full step, error)
        self.thresholds: dict = {}      # step -> the threshold solved at that step (for reports)

    @property
    def planned_full(self) -> int:
        return max(self.budget, sum(self.forced))

    def describe(self) -> str:
        return (f"speed-up {self.speedup:g}x over {self.num_steps} steps = {self.planned_full} full steps, placed "
                f"by the forecast error measured at the representatives (error profile: {self.prior_source})")

    def observe(self, step: int, error: float) -> None:
        if self.last_full is not None and step > self.last_full and math.isfinite(error):
            self.errors[step] = (step - self.last_full, max(float(error), 1e-6))

    def _shape(self, d: int) -> float:
        return 1.0 + self.growth * (d - 1)

    def _late(self, step: int) -> bool:
        """Whether a full step may follow a full step here (``ErrorPrior.late_runs``, late in the run)."""
        return self.late_runs and step >= self.num_steps * self.LATE

    def is_full(self, step: int) -> bool:
        if self.forced[step] or self.last_full is None:
            return True
        distance = step - self.last_full
        if distance <= 0:
            return True
        free = sum(1 for i in range(step, self.num_steps) if not self.forced[i])
        left = self.budget - len(self.full) - sum(self.forced[step + 1:])
        if left <= 0:
            return False
        if left >= free:
            return True
        if distance < 2:
            # right after a full step: full again only where the profile expects an error above the threshold
            # (e.g. the last steps of a video model); otherwise one cached step first, which measures the error
            if not self._late(step) or not self.errors:
                return False
            tau = self.threshold(step, left)
            self.thresholds[step] = tau
            return self.rates([step])[0] > tau
        gap = free / left
        if distance >= max(2.0, self.MAX_GAP * gap):
            return True
        last = self.errors.get(step - 1)
        if last is None:
            return distance >= gap
        tau = self.threshold(step, left)
        self.thresholds[step] = tau
        return last[1] > tau

    # -- the threshold that spends the budget ---------------------------------------------------------
    def rates(self, steps: Sequence[int]) -> list:
        """Expected error at distance 1 of ``steps``: the profile (flat without one) scaled to the errors
        measured so far, recent ones weighing more."""
        seen = sorted(self.errors.items())
        now = seen[-1][0]
        sw = sy = 0.0
        for t, (d, e) in seen:
            w = 0.5 ** ((now - t) / self.HALF_LIFE)
            sw += w
            sy += w * math.log(e / (self._shape(d) * self.prior[t]))
        scale = math.exp(sy / sw)
        return [scale * self.prior[t] for t in steps]

    def simulate(self, step: int, tau: float, rates: dict) -> int:
        """Full steps the threshold rule with ``tau`` takes from ``step`` to the end (forced ones excluded),
        on the expected errors ``rates`` (step -> error at distance 1); the error of step - 1 is the one
        measured."""
        last_full = self.last_full
        known = self.errors.get(step - 1)
        previous = None if known is None else known[1]
        count = 0
        for t in range(step, self.num_steps):
            d = t - last_full
            if self.forced[t]:
                last_full, previous = t, None
                continue
            expected = rates[t] * self._shape(d)
            if (d >= 2 and previous is not None and previous > tau) or (
                    d == 1 and self._late(t) and expected > tau):
                count += 1
                last_full, previous = t, None
                continue
            previous = expected
        return count

    def threshold(self, step: int, left: int) -> float:
        """The threshold at which the rule, on the expected errors, spends ``left`` full steps from ``step``."""
        free = [t for t in range(step, self.num_steps) if not self.forced[t]]
        rates = dict(zip(free, self.rates(free)))
        lo, hi = 1e-6, 1e3
        for _ in range(40):
            mid = math.sqrt(lo * hi)
            if self.simulate(step, mid, rates) > left:
                lo = mid
            else:
                hi = mid
        return hi


__all__ = ["build_full_step_mask", "StepLocator", "Schedule", "FixedSchedule", "ThresholdSchedule", "ErrorPrior",
           "SpeedupSchedule"]
