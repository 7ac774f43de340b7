"""The ClusCa and ClusCa (Advanced) nodes on real ComfyUI: their inputs, what each schedule choice runs, the
family error profile the speed-up controller starts from, and clear refusals of bad input."""

from __future__ import annotations

import pytest
import torch

from devkit.comfy_env import load_pack, pack_module
from devkit.tiny_models import flux_cond, sample, tiny_flux

load_pack()
import nodes  # noqa: E402  (ComfyUI's module, after bootstrap)

from clusca_core.schedule import build_full_step_mask  # noqa: E402

presets = pack_module("nodes.presets")
settings = pack_module("nodes.settings")
families = pack_module("nodes.families")

BASIC, ADVANCED = nodes.NODE_CLASS_MAPPINGS["ClusCa"], nodes.NODE_CLASS_MAPPINGS["ClusCaAdvanced"]


def run(model, steps=20, seed=0):
    pos, neg = flux_cond(seed + 1), flux_cond(seed + 50)
    out = sample(model, pos, neg, steps=steps, cfg=2.0, seed=seed)
    return out, model.model_options["transformer_options"]["clusca"].last_summary


def schema_inputs(cls):
    return {i.id: i for i in cls.define_schema().inputs}


def test_basic_node_has_the_model_the_speedup_and_the_window():
    inputs = schema_inputs(BASIC)
    assert list(inputs) == ["model", "speedup", "start_percent", "end_percent"]
    assert inputs["speedup"].default == settings.DEFAULT_SPEEDUP
    assert all(i.tooltip for i in inputs.values())
    advanced = schema_inputs(ADVANCED)
    assert all(i.tooltip for i in advanced.values())
    assert advanced["schedule"].default == "speed-up" and advanced["speedup"].default == settings.DEFAULT_SPEEDUP
    # the advanced node's other defaults are the basic node's settings
    for key, value in settings.BEST.items():
        if key in advanced:
            assert advanced[key].default == value, key


@pytest.mark.parametrize("speedup", [2.0, 3.0, 5.0])
def test_basic_node_spends_steps_over_speedup_full_steps(speedup):
    m = tiny_flux(2)
    out, s = run(BASIC.execute(model=m, speedup=speedup).result[0], steps=20)
    assert s["full_steps"] == round(20 / speedup) and s["speedup_asked"] == speedup
    assert s["speedup_reached"] == pytest.approx(20 / s["full_steps"])
    assert torch.isfinite(out).all()


def test_speedup_one_runs_every_step_and_matches_the_model_without_clusca():
    m = tiny_flux(2)
    pos, neg = flux_cond(1), flux_cond(50)
    plain = sample(m, pos, neg, steps=20, cfg=2.0)
    out, s = run(BASIC.execute(model=m, speedup=1.0).result[0])
    assert s["full_steps"] == s["steps"] == 20 and s["cached_steps"] == 0
    assert torch.equal(out, plain)


def test_the_window_runs_the_steps_outside_it_in_full_within_the_budget():
    m = tiny_flux(2)
    _, s = run(BASIC.execute(model=m, speedup=4.0, end_percent=0.8).result[0], steps=20)
    assert s["full_steps"] == 5
    assert {17, 18, 19} <= set(s["full_step_indices"])      # outside the window (sigma-based percent)


def test_advanced_schedules():
    m = tiny_flux(2)
    _, fixed = run(ADVANCED.execute(model=m, schedule="fixed interval", fresh_interval=4, warmup_steps=2).result[0])
    assert fixed["full_step_indices"] == [i for i, f in enumerate(build_full_step_mask(20, 2, 4)) if f]
    _, paper = run(ADVANCED.execute(model=m, schedule="paper").result[0])
    flux_paper = {**settings.PAPER, **families.FLUX1.reference_settings}
    assert paper["full_step_indices"] == [i for i, f in enumerate(
        build_full_step_mask(20, flux_paper["warmup_steps"], flux_paper["fresh_interval"])) if f]
    _, low = run(ADVANCED.execute(model=m, schedule="error threshold", adaptive_threshold=0.001).result[0])
    _, high = run(ADVANCED.execute(model=m, schedule="error threshold", adaptive_threshold=5.0).result[0])
    assert low["full_steps"] > high["full_steps"] and "speedup_asked" not in low
    _, ctl = run(ADVANCED.execute(model=m, schedule="speed-up", speedup=5.0).result[0])
    assert ctl["full_steps"] == 4 and ctl["speedup_asked"] == 5.0


def test_bad_input_is_refused_with_a_message_naming_it():
    assert BASIC.validate_inputs(speedup=4.0) is True
    msg = ADVANCED.validate_inputs(schedule="speed-up", clusters=0)
    assert isinstance(msg, str) and "representatives" in msg
    msg = ADVANCED.validate_inputs(schedule="error threshold", mode="taylorseer")
    assert isinstance(msg, str) and "representatives" in msg
    assert "schedule" in ADVANCED.validate_inputs(schedule="fastest")
    assert ADVANCED.validate_inputs(schedule="fixed interval", mode="taylorseer", clusters=0) is True


def test_every_family_has_an_error_profile_from_a_measured_reference_model():
    """The controller's prior: each supported family names a reference model whose profile was measured
    (ten parts of the run, positive), or the controller would run on a flat profile."""
    missing = [f.key for f in families.FAMILIES if f.block_kinds and presets.error_prior_for(f.key) is None]
    assert not missing, missing
    for source, (profile, growth, final_full, late_runs, *final_share) in presets.MEASURED_ERROR_PROFILES.items():
        assert len(profile) == 10 and all(p > 0 for p in profile) and growth >= 0, source
        assert all(0 <= share < 1 for share in final_share) and len(final_share) <= 1, source
    assert presets.error_prior_for("flux2").final_share == 0.3 and presets.error_prior_for("flux").final_share == 0
    assert presets.error_prior_for("no_such_family") is None


def test_controller_run_gets_the_family_prior():
    _, s = run(BASIC.execute(model=tiny_flux(2), speedup=4.0).result[0], steps=12)
    assert "error profile: flux_shapes" in s["schedule"]


def test_probe_mode_outputs_taylorseer_and_measures_the_error():
    """mode probe: the representatives only measure the forecast error; the output is TaylorSeer's."""
    m = tiny_flux(2)
    common = dict(schedule="fixed interval", fresh_interval=3, warmup_steps=2, verbose=True)
    ts, _ = run(ADVANCED.execute(model=m, mode="taylorseer", **common).result[0])
    probe, s = run(ADVANCED.execute(model=m, mode="probe", **common).result[0])
    clusca, _ = run(ADVANCED.execute(model=m, mode="clusca", **common).result[0])
    assert torch.equal(probe, ts) and not torch.equal(clusca, ts)
    assert len(s["probe_errors"]) == s["cached_steps"] and all(e > 0 for _, _, e in s["probe_errors"])
    _, ctl = run(ADVANCED.execute(model=m, mode="probe", schedule="speed-up", speedup=4.0).result[0])
    assert ctl["full_steps"] == 5
