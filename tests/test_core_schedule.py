import pytest
import torch

from clusca_core.schedule import StepLocator, build_full_step_mask


def full_steps(mask):
    return [i for i, f in enumerate(mask) if f]


def test_reference_schedule_flux():
    mask = build_full_step_mask(50, 3, 5)
    assert full_steps(mask) == [0, 1, 2, 7, 12, 17, 22, 27, 32, 37, 42, 47]
    assert sum(mask) == 12


@pytest.mark.parametrize("interval,expected", [(4, 14), (5, 12), (6, 10), (7, 9)])
def test_reference_full_step_counts(interval, expected):
    assert sum(build_full_step_mask(50, 3, interval)) == expected


def test_hunyuan_reference_schedule():
    # warm-up 1, interval 5: {0} U {5j}: 10 full steps out of 50
    assert full_steps(build_full_step_mask(50, 1, 5)) == list(range(0, 50, 5))


def test_interval_one_is_all_full_and_short_runs():
    assert all(build_full_step_mask(20, 0, 1))
    assert all(build_full_step_mask(2, 3, 5))          # fewer steps than warm-up
    assert build_full_step_mask(1, 0, 5) == [True]     # step 0 is always full
    assert build_full_step_mask(0, 3, 5) == []


def test_window_forces_full_and_restarts_counter():
    window = [i >= 10 and i < 30 for i in range(40)]
    mask = build_full_step_mask(40, 3, 5, window)
    assert all(mask[:10]) and all(mask[30:])
    assert not mask[10]                      # the counter restarted at step 9, the last step outside
    assert full_steps(mask)[10:] == [14, 19, 24, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]


def test_invalid_schedule_arguments():
    with pytest.raises(ValueError):
        build_full_step_mask(10, 0, 0)
    with pytest.raises(ValueError):
        build_full_step_mask(10, 0, 2, [True] * 3)


def test_locator_exact_between_and_repeated():
    sig = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0])
    loc = StepLocator(sig)
    assert loc.num_steps == 4
    assert loc.locate(1.0) == 0.0
    assert loc.locate(0.8) == 1.0
    assert loc.locate(0.65) == pytest.approx(1.5)        # a midpoint evaluation (dpm_2 style)
    assert loc.step_index(1.5) == 1
    assert loc.locate(0.5) == 2.0
    assert loc.locate(0.5) == 2.0                        # split cond/uncond: same sigma, same position
    assert loc.locate(5.0) == 0.0                        # outside the schedule
    assert loc.locate(-1.0) == 4.0
    assert loc.step_index(4.0) == 3


def test_locator_prefers_later_match_for_restarts():
    loc = StepLocator([1.0, 0.5, 1.0, 0.5, 0.0])
    assert loc.locate(1.0) == 0.0
    assert loc.locate(0.5) == 1.0
    assert loc.locate(1.0) == 2.0                        # the restart, not step 0 again
    assert loc.locate(0.5) == 3.0


def test_window_mask_uses_sigma_rule():
    loc = StepLocator([1.0, 0.75, 0.5, 0.25, 0.0])
    assert loc.window_mask(0.8, 0.3) == [False, True, True, False]
    assert loc.window_mask(float("inf"), 0.0) == [True] * 4
