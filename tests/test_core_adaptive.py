"""The error-adaptive schedules: the threshold schedule and the speed-up controller (RunState and the schedule
objects, driven by synthetic errors)."""

import math

import torch

from clusca_core.config import ClusCaConfig
from clusca_core.run import RunState
from clusca_core.schedule import ErrorPrior, SpeedupSchedule


def drive(config, errors, steps=20, slots=("cond",), prior=None):
    """Walk a run step by step; ``errors(step, distance)`` is the forecast error a cached step reports
    (``distance`` from the last full step); one call per step holds all ``slots``."""
    run = RunState(config, torch.linspace(1, 0, steps + 1), error_prior=prior)
    decisions, last_full = [], None
    for i in range(steps):
        plan = run.plan_call(float(run.locator.sigmas[i]), list(slots), len(slots), ("shape",))
        plan.blocks_run = 1
        if plan.full:
            for slot in plan.slots:
                slot.position = plan.position       # as a recorded full step would
            last_full = i
        else:
            plan.probe_errors.append(torch.full((len(slots),), float(_call(errors, i, i - last_full))))
        run.finish_call(plan)
        decisions.append(plan.full)
    return decisions, run


def _call(errors, step, distance):
    try:
        return errors(step, distance)
    except TypeError:
        return errors(step)


def full_steps(decisions):
    return [i for i, f in enumerate(decisions) if f]


def test_large_errors_request_the_next_step_in_full_with_one_cached_step_minimum():
    cfg = ClusCaConfig(adaptive_threshold=0.1, warmup_steps=2, fresh_interval=5)
    decisions, run = drive(cfg, lambda step: 1.0)
    assert full_steps(decisions) == [0, 1] + list(range(3, 20, 2))     # full, cached, full, cached...
    assert run.summary()["schedule_bound"] == 20 / len(full_steps(decisions))


def test_small_errors_run_to_the_ceiling():
    cfg = ClusCaConfig(adaptive_threshold=0.1, warmup_steps=2, fresh_interval=5)      # ceiling 2 x 5 = 10
    decisions, _ = drive(cfg, lambda step: 0.01)
    assert full_steps(decisions) == [0, 1, 11]
    cfg = ClusCaConfig(adaptive_threshold=0.1, warmup_steps=2, fresh_interval=5, max_interval=4)
    decisions, _ = drive(cfg, lambda step: 0.01)
    assert full_steps(decisions) == [0, 1, 5, 9, 13, 17]


def test_errors_decide_where_full_steps_go():
    cfg = ClusCaConfig(adaptive_threshold=0.1, warmup_steps=1, fresh_interval=5)
    decisions, _ = drive(cfg, lambda step: 0.5 if step < 8 else 0.01)
    fulls = full_steps(decisions)
    early, late = [f for f in fulls if f < 10], [f for f in fulls if f >= 10]
    assert len(early) >= 4 and len(late) <= 2


def test_speedup_controller_spends_exactly_its_budget_whatever_the_errors():
    patterns = {"always large": lambda s, d: 1.0, "never": lambda s, d: 0.0, "linear": lambda s, d: 0.02 * d,
                "rising": lambda s, d: 0.001 * d * math.exp(s / 10), "falling": lambda s, d: 0.05 * d * math.exp(-s / 10),
                "noisy": lambda s, d: 0.02 * d * (1 + math.sin(7 * s))}
    for target in (2.0, 3.0, 4.0, 5.0, 6.0):
        for warmup in (1, 3):
            cfg = ClusCaConfig(target_speedup=target, warmup_steps=warmup, fresh_interval=5)
            for name, errors in patterns.items():
                decisions, run = drive(cfg, errors, steps=50)
                assert len(full_steps(decisions)) == round(50 / target), (target, warmup, name)
                assert full_steps(decisions)[:warmup] == list(range(warmup))
                s = run.summary()
                assert s["speedup_asked"] == target and s["full_steps"] == round(50 / target)


def test_speedup_controller_spaces_full_steps_evenly_on_steady_errors():
    cfg = ClusCaConfig(target_speedup=4.0, warmup_steps=1, fresh_interval=5)
    flat, _ = drive(cfg, lambda s, d: 0.02 * d, steps=50)
    gaps = [b - a for a, b in zip(full_steps(flat), full_steps(flat)[1:])]
    assert max(gaps) - min(gaps) <= 3                          # steady errors: about evenly spaced


def test_speedup_controller_decisions_do_not_depend_on_how_conditionings_are_batched():
    cfg = ClusCaConfig(target_speedup=4.0, warmup_steps=2, fresh_interval=5)
    errors = lambda s, d: 0.01 * d * (1 + (s % 7) / 3)          # noqa: E731
    one, _ = drive(cfg, errors, steps=30, slots=("cond",))
    two, _ = drive(cfg, errors, steps=30, slots=("cond", "uncond"))
    assert one == two


def test_speedup_controller_threshold_solves_the_budget():
    sched = SpeedupSchedule([True] + [False] * 39, speedup=4.0)
    sched.full_done(0)
    for t in range(1, 6):
        sched.observe(t, 0.01 * t)                              # growing with the distance, steady rate
    free = list(range(6, 40))
    rates = dict(zip(free, sched.rates(free)))
    tau = sched.threshold(6, 8)
    assert sched.simulate(6, tau, rates) <= 8 < sched.simulate(6, tau * 0.97, rates)
    assert sched.threshold(6, 4) > tau                          # fewer full steps left: a higher threshold


def test_error_prior_is_the_profile_over_the_run():
    prior = ErrorPrior(profile=(1.0, 2.0, 4.0), growth=0.5)
    assert prior.per_step(3) == [1.0, 2.0, 4.0]
    six = prior.per_step(6)
    assert six[0] == 1.0 and six[-1] == 4.0 and all(a <= b for a, b in zip(six, six[1:]))
    assert SpeedupSchedule([True] + [False] * 5, 2.0, prior).prior == six


def test_speedup_controller_follows_the_family_profile():
    """The same measured errors, early in a run: a profile that rises saves full steps for the end of the
    run, one that falls spends them early."""
    cfg = ClusCaConfig(target_speedup=4.0, warmup_steps=1, fresh_interval=5)
    late = lambda decisions: len([f for f in full_steps(decisions) if f >= 25])   # noqa: E731
    rising = ErrorPrior(profile=(0.01, 0.02, 0.04, 0.08, 0.16), growth=0.5)
    falling = ErrorPrior(profile=tuple(reversed(rising.profile)), growth=0.5)
    shape = lambda p: (lambda s, d: p.per_step(50)[s] * (1 + 0.5 * (d - 1)))       # noqa: E731
    up, _ = drive(cfg, shape(rising), steps=50, prior=rising)
    down, _ = drive(cfg, shape(falling), steps=50, prior=falling)
    assert len(full_steps(up)) == len(full_steps(down)) == round(50 / 4.0)
    assert late(up) > late(down)


def test_fixed_schedule_is_untouched_when_adaptive_is_off():
    decisions, _ = drive(ClusCaConfig(), lambda step: 5.0)
    assert full_steps(decisions) == [0, 1, 2, 7, 12, 17]


def test_adaptive_settings_are_validated():
    assert "target_speedup" in ClusCaConfig(target_speedup=0.5).errors()[0]
    assert "adaptive_threshold" in ClusCaConfig(adaptive_threshold=-1).errors()[0]
    assert ClusCaConfig(target_speedup=4).adaptive and not ClusCaConfig().adaptive
    assert not ClusCaConfig(target_speedup=4, fresh_interval=1).adaptive
    for no_probe in (dict(mode="taylorseer"), dict(mode="fora"), dict(clusters=0), dict(memory_mode="lite")):
        errs = ClusCaConfig(adaptive_threshold=0.1, **no_probe).errors()
        assert len(errs) == 1 and "representatives" in errs[0]
        assert not ClusCaConfig(**no_probe).errors()


def test_late_runs_put_full_steps_in_a_row_where_the_profile_ends_high():
    """A video-like profile (errors rising steeply at the end): with late_runs the last steps run in full one
    after another; without, a cached step always separates two full steps after the warm-up."""
    cfg = ClusCaConfig(target_speedup=3.0, warmup_steps=1, fresh_interval=5)
    profile = (0.02,) * 8 + (0.1, 0.5)
    errors = lambda p: (lambda s, d: p.per_step(50)[s] * (1 + 0.3 * (d - 1)))       # noqa: E731
    runs = ErrorPrior(profile, 0.3, late_runs=True)
    plain = ErrorPrior(profile, 0.3)
    with_runs, _ = drive(cfg, errors(runs), steps=50, prior=runs)
    without, _ = drive(cfg, errors(plain), steps=50, prior=plain)
    pairs = lambda d: [i for i in full_steps(d) if i > 1 and i - 1 in full_steps(d)]   # noqa: E731
    assert len(full_steps(with_runs)) == len(full_steps(without)) == round(50 / 3.0)
    assert pairs(without) == [] and pairs(with_runs) and min(pairs(with_runs)) >= 25


def test_final_share_runs_the_end_of_the_run_in_full():
    """ErrorPrior.final_share: that share of the budget is one run of full steps at the end, the budget still
    exact; a run whose last step does not give the output (final=False) keeps only its warm-up forced."""
    from clusca_core.run import make_schedule
    prior = ErrorPrior((0.02,) * 10, 0.5, final_share=0.4)
    for target, tail in ((3.0, 7), (4.0, 5), (6.0, 3)):
        cfg = ClusCaConfig(target_speedup=target, warmup_steps=2, fresh_interval=5)
        decisions, _ = drive(cfg, lambda s, d: 0.02 * d, steps=50, prior=prior)
        fulls = full_steps(decisions)
        assert len(fulls) == round(50 / target), target
        assert fulls[:2] == [0, 1] and fulls[-tail:] == list(range(50 - tail, 50)), (target, fulls)
        assert len([f for f in fulls if 2 <= f < 50 - tail]) == round(50 / target) - 2 - tail
        middle = make_schedule(cfg, 50, [True] * 50, prior=prior, final=False)
        assert full_steps(middle.forced) == [0, 1]
    # a budget the warm-up already spends leaves no tail
    cfg = ClusCaConfig(target_speedup=20.0, warmup_steps=3, fresh_interval=5)
    assert full_steps(drive(cfg, lambda s, d: 0.02 * d, steps=50, prior=prior)[0]) == [0, 1, 2]
