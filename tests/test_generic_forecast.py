"""The generic block forecast on families ClusCa has no description for (SD3, AuraFlow, Hunyuan3D 2.0), through
real ComfyUI: exact at interval 1, full steps bit-identical, caching as scheduled (attention only on full
steps), close to uncached; its self-checks (a model that does not route its blocks through the patches, a
block whose output is not its streams) and the settings it cannot honour (adaptive schedule, lite memory)."""

from __future__ import annotations

import pytest
import torch

from family_checks import apply_node, last_summary, live_slot_caches, nodes
from devkit.comfy_env import pack_module
from devkit.metrics import psnr
from devkit.tiny_generic import GENERIC_MODELS, HUNYUAN3D_21, SD3, tiny_sd15
from devkit.tiny_models import AttentionCounter, flux_cond, sample, tiny_flux

from clusca_core.schedule import build_full_step_mask

METHOD = "generic block forecast"
MIN_PSNR = 18.0          # dB, final latent vs uncached at the node's defaults, 10 steps (measured 21.8-28)
IDS = [m.name for m in GENERIC_MODELS]


def run(gm, model, steps=10, cfg=2.0, sampler="euler", batch=1, size=None, pos=None, neg=None, **kw):
    return sample(model, pos or gm.cond(1), neg or gm.cond(2), steps=steps, cfg=cfg, sampler=sampler,
                  latent=gm.latent(batch, size), **kw)


@pytest.mark.parametrize("gm", GENERIC_MODELS, ids=IDS)
def test_interval_one_is_exact_and_full_steps_are_bit_identical(gm):
    m = gm.make(0)
    seen = {"base": [], "generic": []}

    def grab(key):
        return lambda step, x0, x, total: seen[key].append(x0.clone())

    base = run(gm, m, callback=grab("base"))
    assert torch.equal(run(gm, apply_node(m, fresh_interval=1)), base)
    patched = apply_node(m)
    run(gm, patched, callback=grab("generic"))
    for i in range(3):            # the warm-up runs the blocks with the update recording on
        assert torch.equal(seen["base"][i], seen["generic"][i]), f"step {i}"
    assert not torch.equal(seen["base"][-1], seen["generic"][-1])
    assert last_summary(patched)["method"] == METHOD


@pytest.mark.parametrize("gm", GENERIC_MODELS, ids=IDS)
def test_defaults_cache_as_scheduled_and_stay_close(gm, caplog):
    m = gm.make(0)
    base = run(gm, m)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    with caplog.at_level("INFO", logger="ClusCa"):
        out = run(gm, patched)
    full = sum(build_full_step_mask(10, 3, 5))
    assert counter.calls == full * gm.attention_per_call       # no attention (no block) on cached steps
    s = last_summary(patched)
    assert s["method"] == METHOD and s["family"] == gm.name and "disabled" not in s
    assert (s["full_steps"], s["cached_steps"]) == (full, 10 - full)
    assert s["tokens_per_cached_step"] == {} and s["peak_cache_bytes"] > 0 and s["estimated_flops_speedup"] > 1
    assert torch.isfinite(out).all() and psnr(out, base) > MIN_PSNR
    assert not torch.equal(out, base)
    summary = pack_module("nodes.holder").summary_line(s)
    assert f"ClusCa - {gm.name} [{METHOD}]" in summary and f"10 steps, {full} full, {10 - full} cached" in summary
    lines = [r.getMessage() for r in caplog.records if r.name == "ClusCa"]
    assert sum(summary == line for line in lines) == 1


def test_sd3_last_block_without_text_and_cond_uncond_variants():
    """SD3's last joint block returns no text (None): the forecast returns None for it too. Split cond/uncond
    calls (different text lengths) keep their own caches; CFG 1 with a batch of 2; Heun keeps the schedule."""
    gm = SD3
    m = gm.make(0)
    pos, neg = gm.cond(1, tokens=8), gm.cond(2, tokens=7)
    base = run(gm, m, pos=pos, neg=neg)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(gm, patched, pos=pos, neg=neg)
    full = sum(build_full_step_mask(10, 3, 5))
    assert counter.calls == 2 * full * gm.attention_per_call
    assert psnr(out, base) > MIN_PSNR
    base2 = run(gm, m, cfg=1.0, batch=2)
    out2 = run(gm, apply_node(m), cfg=1.0, batch=2)
    for i in range(2):
        assert psnr(out2[i], base2[i]) > MIN_PSNR
    heun = apply_node(m)
    counter = AttentionCounter()
    counter.install(heun)
    steps = 8
    run(gm, heun, steps=steps, sampler="heun")
    sched = build_full_step_mask(steps, 3, 5)
    full_evals = sum(sched[i] + sched[i + 1] for i in range(steps - 1)) + sched[-1]
    assert counter.calls == full_evals * gm.attention_per_call
    assert last_summary(heun)["full_steps"] == sum(sched)


def test_back_to_back_sizes_and_untouched_rng():
    gm = SD3
    m = gm.make(0)
    patched = apply_node(m)
    small, large = gm.sizes
    first = run(gm, patched, size=small)
    second = run(gm, patched, size=large)
    assert torch.equal(second, run(gm, apply_node(m), size=large))
    assert torch.equal(first, run(gm, patched, size=small))
    assert live_slot_caches() == 0
    torch.manual_seed(123)
    run(gm, m)
    after_base = torch.random.get_rng_state()
    torch.manual_seed(123)
    run(gm, patched)
    assert torch.equal(torch.random.get_rng_state(), after_base)


def test_model_that_does_not_route_blocks_through_the_patches_runs_unchanged(caplog):
    """Hunyuan3D 2.1 calls its ("block", i) patches without transformer_options: ClusCa cannot tell which run
    a block belongs to. The first call shows it, the run goes on unchanged, and it is said once."""
    gm = HUNYUAN3D_21
    m = gm.make(0)
    base = run(gm, m)
    patched = apply_node(m)
    assert patched is not m        # its forward does look up block patches: the generic forecast is tried
    with caplog.at_level("WARNING", logger="ClusCa"):
        out = run(gm, patched)
        again = run(gm, patched)
    assert torch.equal(out, base) and torch.equal(again, base)
    s = last_summary(patched)
    assert "did not route its blocks" in s["disabled"] and s["cached_steps"] == 0
    told = [r.getMessage() for r in caplog.records if "did not route its blocks" in r.getMessage()]
    assert len(told) <= 1          # once per process (an earlier test in this process may have said it)


def test_model_without_block_patches_is_not_supported(caplog):
    m = tiny_sd15(0)
    with caplog.at_level("WARNING", logger="ClusCa"):
        assert apply_node(m) is m
    assert any("passes through unchanged" in r.getMessage() and "UNetModel" in r.getMessage() for r in caplog.records)


def test_self_check_switches_off_when_a_block_output_is_not_its_streams():
    """Another node's block patch (kept and called by ClusCa on full steps) returns an extra tensor that is no
    input of the block: the generic forecast cannot forecast it, so caching goes off and the model runs as it
    would without ClusCa."""
    gm = SD3
    m = gm.make(0).clone()

    def extra_output(args, extra):
        out = extra["original_block"](args)
        out["probe"] = args["img"][:, :1] * 0
        return out

    m.set_model_patch_replace(extra_output, "dit", "double_block", 0)
    base = run(gm, m)
    patched = apply_node(m)
    out = run(gm, patched)
    assert torch.equal(out, base)
    s = last_summary(patched)
    assert "'probe'" in s["disabled"] and "self-check" in s["disabled"] and s["cached_steps"] == 0


def test_adaptive_schedule_and_lite_memory_fall_back_with_a_log_line(caplog):
    gm = SD3
    m = gm.make(0)
    with caplog.at_level("INFO", logger="ClusCa"):
        adaptive = apply_node(m, adaptive_threshold=0.05)
        lite = apply_node(m, memory_mode="lite")
    lines = [r.getMessage() for r in caplog.records if r.name == "ClusCa"]
    assert any("error-adaptive schedule" in line and "fixed schedule" in line for line in lines)
    assert any("memory_mode lite" in line for line in lines)
    full = sum(build_full_step_mask(10, 3, 5))
    for patched in (adaptive, lite):
        cfg = patched.model_options["transformer_options"]["clusca"].config
        assert not cfg.adaptive and cfg.memory_mode == "full"
        out = run(gm, patched)
        s = last_summary(patched)
        assert torch.isfinite(out).all() and "disabled" not in s
        assert (s["full_steps"], s["cached_steps"]) == (full, 10 - full)


def test_basic_node_speedup_becomes_the_fixed_interval():
    """The ClusCa node on a model of the generic forecast: the speed-up asked for is the fixed interval."""
    gm = SD3
    m = gm.make(0)
    patched = nodes.NODE_CLASS_MAPPINGS["ClusCa"].execute(model=m, speedup=3.0).result[0]
    cfg = patched.model_options["transformer_options"]["clusca"].config
    assert not cfg.adaptive and cfg.fresh_interval == 3
    run(gm, patched)
    s = last_summary(patched)
    assert s["full_steps"] == sum(build_full_step_mask(10, cfg.warmup_steps, 3))


def test_generic_forecast_forced_on_flux():
    """The generic adapter can be forced on a family model (the benchmark compares it with the full adapter)."""
    generic = pack_module("nodes.adapters.generic")
    config = pack_module("clusca_core.config").ClusCaConfig()
    apply = pack_module("nodes.patching").apply_clusca
    m = tiny_flux(0)
    adapter, _ = generic.detect(m.model.diffusion_model, "Flux")
    assert adapter is not None and set(adapter.block_kinds) == {"double_block", "single_block"}
    pos, neg = flux_cond(1), flux_cond(2)
    base = sample(m, pos, neg, steps=10, cfg=2.0)
    assert torch.equal(sample(apply(m, config.with_changes(fresh_interval=1), adapter=adapter), pos, neg,
                              steps=10, cfg=2.0), base)
    patched = apply(m, config, adapter=adapter)
    counter = AttentionCounter()
    counter.install(patched)
    out = sample(patched, pos, neg, steps=10, cfg=2.0)
    s = last_summary(patched)
    full = sum(build_full_step_mask(10, 3, 5))
    assert s["method"] == METHOD and s["geometry"]["blocks"] == "2 double_block + 2 single_block"
    assert counter.calls == full * 4 and psnr(out, base) > MIN_PSNR
