"""The error-adaptive schedule and the target speed-up budget (RunState, driven by synthetic errors)."""

import torch

from clusca_core.config import ClusCaConfig
from clusca_core.slots import RunState


def drive(config, errors, steps=20):
    """Walk a run step by step; ``errors(step)`` is the forecast error a cached step reports."""
    run = RunState(config, torch.linspace(1, 0, steps + 1))
    decisions = []
    for i in range(steps):
        plan = run.plan_call(float(run.locator.sigmas[i]), ["cond"], 1, ("shape",))
        plan.blocks_run = 1
        if plan.full:
            plan.slots[0].position = plan.position       # as a recorded full step would
        else:
            plan.probe_errors.append(torch.tensor(errors(i)))
        run.finish_call(plan)
        decisions.append(plan.full)
    return decisions, run


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


def test_target_speedup_budget_is_kept():
    for target in (2.0, 4.0, 5.0):
        cfg = ClusCaConfig(target_speedup=target, warmup_steps=3, fresh_interval=5)
        decisions, run = drive(cfg, lambda step: 1.0, steps=50)          # errors always ask for full steps
        assert len(full_steps(decisions)) == round(50 / target)
        decisions, run = drive(cfg, lambda step: 0.0, steps=50)          # errors never do: ceiling only
        assert len(full_steps(decisions)) <= round(50 / target)


def test_threshold_follows_the_budget_pace():
    cfg = ClusCaConfig(target_speedup=5.0, warmup_steps=2, fresh_interval=5, adaptive_threshold=0.1)
    run = RunState(cfg, torch.linspace(1, 0, 51))
    run.stats.full_steps.update({0, 1})
    on_pace = run.adaptive_threshold_at(2)
    run.stats.full_steps.update({2, 3, 4, 5})          # ahead of the budget: harder to ask for more
    assert run.adaptive_threshold_at(6) > on_pace
    assert abs(on_pace - 0.1) < 0.05


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
