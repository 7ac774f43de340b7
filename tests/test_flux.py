"""ClusCa on tiny FLUX models through real ComfyUI."""

from __future__ import annotations

import asyncio
import math
import logging

import pytest
import torch

from family_checks import FamilyChecks, apply_node, last_summary, live_slot_caches, nodes
from devkit.metrics import psnr
from devkit.tiny_models import AttentionCounter, flux_cond, sample, tiny_flux

import comfy.model_management


class TestFluxFamily(FamilyChecks):
    family = "FLUX.1"
    blocks = 4

    def make_model(self, dtype=torch.float32):
        return tiny_flux(0, dtype=dtype)

    def conds(self, seed, batch=1, tokens=8):
        return flux_cond(seed, tokens=tokens or 8)

    def latent(self, batch=1, size=None):
        h, w = size or (16, 16)
        return torch.zeros(batch, 16, h, w)

    def latent_size_pair(self):
        return (16, 16), (24, 16)


# -- the node as a public contract ------------------------------------------------------------------

CONTRACT = {"fresh_interval": ("INT", 5), "warmup_steps": ("INT", 3), "taylor_order": ("INT", 1),
            "clusters": ("INT", 16), "propagation_ratio": ("FLOAT", 0.005), "start_percent": ("FLOAT", 0.0),
            "end_percent": ("FLOAT", 1.0), "seed": ("INT", 0)}


def test_node_is_registered_by_comfyui_loader_with_its_contract():
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS.get("ApplyClusCa") == "Apply ClusCa"
    info = node.INPUT_TYPES()
    required = info["required"]
    assert list(required)[:9] == ["model"] + list(CONTRACT)
    assert required["model"][0] == "MODEL"
    for name, (typ, default) in CONTRACT.items():
        assert required[name][0] == typ and required[name][1]["default"] == default, name
    for name, spec in list(required.items()) + list(info.get("optional", {}).items()):
        assert spec[1].get("tooltip"), f"input {name} has no tooltip"
    assert list(node.RETURN_TYPES) == ["MODEL"]
    assert node.CATEGORY == "ClusCa"


@pytest.mark.parametrize("bad,fragment", [
    (dict(fresh_interval=0), "fresh_interval"),
    (dict(clusters=-1), "clusters"),
    (dict(propagation_ratio=1.5), "propagation_ratio"),
    (dict(start_percent=0.9, end_percent=0.1), "start_percent"),
])
def test_invalid_inputs_are_refused_at_validation(bad, fragment):
    import execution
    inputs = {"model": ["2", 0], **{k: v for k, (_, v) in CONTRACT.items()}, **bad}
    prompt = {"1": {"class_type": "ApplyClusCa", "inputs": inputs},
              "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "missing.safetensors", "weight_dtype": "default"}}}
    ok, errors, node_id = asyncio.run(execution.validate_inputs("test", prompt, "1", {}))
    assert not ok and node_id == "1"
    ours = [e for e in errors if e["type"] == "custom_validation_failed"]
    assert ours and fragment in ours[0]["details"]
    with pytest.raises(ValueError, match=fragment):
        apply_node(tiny_flux(0), **bad)


def test_valid_inputs_pass_validation():
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    assert node.validate_inputs(**{k: v for k, (_, v) in CONTRACT.items()}) is True


# -- FLUX specifics -----------------------------------------------------------------------------------

def test_schnell_without_guidance_and_fill_style_inputs():
    m = tiny_flux(0, guidance_embed=False)
    pos, neg = flux_cond(1, guidance=None), flux_cond(2, guidance=None)
    base = sample(m, pos, neg, steps=8, cfg=1.0)
    out = sample(apply_node(m), pos, neg, steps=8, cfg=1.0)
    assert torch.isfinite(out).all() and psnr(out, base) > 20


def test_kontext_reference_tokens_are_cached_with_the_image():
    m = tiny_flux(0)
    ref = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    pos = flux_cond(1)
    pos[0][1]["reference_latents"] = [ref]
    neg = flux_cond(2)
    neg[0][1]["reference_latents"] = [ref]
    base = sample(m, pos, neg, steps=10, cfg=2.0)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = sample(patched, pos, neg, steps=10, cfg=2.0)
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    s = last_summary(patched)
    assert s["geometry"]["reference tokens"] == 16 and s["cached_steps"] > 0
    assert counter.calls == s["full_steps"] * 4


def test_unsupported_model_passes_through_with_a_warning(caplog):
    # an SD 1.x UNet routes no block through patches_replace["dit"] and has no family description: neither a
    # family nor the generic block forecast can take it (tests/test_generic_forecast.py has the models the
    # generic forecast takes)
    from devkit.tiny_generic import tiny_sd15
    m = tiny_sd15(0)
    with caplog.at_level("WARNING", logger="ClusCa"):
        out = apply_node(m)
    assert out is m
    assert any("passes through unchanged" in r.getMessage() for r in caplog.records)


def test_applying_twice_replaces_instead_of_stacking():
    m = tiny_flux(0)
    once = apply_node(m, fresh_interval=3)
    twice = apply_node(once, fresh_interval=4)
    import comfy.patcher_extension as pe
    for point in (pe.WrappersMP.OUTER_SAMPLE, pe.WrappersMP.DIFFUSION_MODEL):
        assert len(twice.wrappers[point]["clusca"]) == 1
    patches = twice.model_options["transformer_options"]["patches_replace"]["dit"]
    assert len(patches) == 4 and all(p.inner is None for p in patches.values())
    assert twice.model_options["transformer_options"]["clusca"].config.fresh_interval == 4
    out = sample(twice, flux_cond(1), flux_cond(2), steps=9, cfg=2.0)
    assert last_summary(twice)["full_steps"] == 4   # {0,1,2,6} at interval 4
    assert torch.isfinite(out).all()


def test_block_patch_installed_before_is_kept_for_full_steps():
    m = tiny_flux(0).clone()
    calls = []

    def other_patch(args, extra):
        calls.append(1)
        return extra["original_block"](args)

    m.set_model_patch_replace(other_patch, "dit", "double_block", 0)
    base = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    n_base = len(calls)
    calls.clear()
    patched = apply_node(m)
    sample(patched, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    assert n_base == 10 and len(calls) == last_summary(patched)["full_steps"]
    assert base is not None


def test_layout_self_check_switches_caching_off(caplog):
    """If ComfyUI's block ever computes something the adapter does not expect, the run goes on unchanged."""
    m = tiny_flux(0)
    block = m.model.diffusion_model.double_blocks[1]
    state = {"n": 0}

    def drifting_modulation(_module, _inputs, output):
        state["n"] += 1       # every call gives a different gate: the block and the adapter disagree
        mod1, mod2 = output
        mod1.gate = mod1.gate * (1.0 + 0.5 * state["n"])
        return mod1, mod2

    handle = block.img_mod.register_forward_hook(drifting_modulation)
    try:
        patched = apply_node(m)
        counter = AttentionCounter()
        counter.install(patched)
        with caplog.at_level("WARNING", logger="ClusCa"):
            out = sample(patched, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()
    assert counter.calls == 10 * 4                  # every step ran in full
    assert "do not add up" in last_summary(patched)["disabled"]
    assert any("caching switched off" in r.getMessage() for r in caplog.records)


def test_interrupted_run_leaves_nothing_behind():
    m = tiny_flux(0)
    patched = apply_node(m)

    def interrupt(step, x0, x, total):
        if step == 5:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(patched, flux_cond(1), flux_cond(2), steps=10, cfg=2.0, callback=interrupt)
    assert patched.model_options["transformer_options"]["clusca"].run is None
    assert live_slot_caches() == 0
    clean = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    assert torch.equal(sample(patched, flux_cond(1), flux_cond(2), steps=10, cfg=2.0), clean)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models(dtype):
    m = tiny_flux(0, dtype=dtype)
    base = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    out = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    assert torch.isfinite(out).all() and psnr(out, base) > 15
    assert torch.equal(sample(apply_node(m, fresh_interval=1), flux_cond(1), flux_cond(2), steps=10, cfg=2.0), base)


def test_window_outside_caching_is_full():
    m = apply_node(tiny_flux(0), start_percent=0.3, end_percent=0.7)
    counter = AttentionCounter()
    counter.install(m)
    sample(m, flux_cond(1), flux_cond(2), steps=20, cfg=2.0)
    s = last_summary(m)
    assert 0 < s["cached_steps"] < 20 * 0.4 + 1
    assert counter.calls == s["full_steps"] * 4


# -- memory controls ----------------------------------------------------------------------------------

def test_cache_dtype_sets_the_cache_precision_and_bytes():
    m = tiny_flux(0)
    full = apply_node(m)
    half = apply_node(m, cache_dtype="bf16")
    base = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    out_full = sample(full, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    out_half = sample(half, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    b_full, b_half = last_summary(full)["peak_cache_bytes"], last_summary(half)["peak_cache_bytes"]
    assert b_half < 0.6 * b_full
    assert torch.isfinite(out_half).all() and psnr(out_half, base) > 20
    assert not torch.equal(out_half, out_full)


def test_cache_device_cpu_matches_on_a_cpu_model():
    m = tiny_flux(0)
    a = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    b = sample(apply_node(m, cache_device="cpu"), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    assert torch.equal(a, b)


def test_lite_mode_skips_blocks_and_uses_far_less_memory():
    m = tiny_flux(0)
    base = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    lite = apply_node(m, memory_mode="lite")
    counter = AttentionCounter()
    counter.install(lite)
    out = sample(lite, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    s = last_summary(lite)
    assert counter.calls == s["full_steps"] * 4 and s["cached_steps"] > 0
    assert torch.isfinite(out).all() and psnr(out, base) > 15
    full = apply_node(m)
    sample(full, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    # lite: one forecast of the stack output, 2 Taylor factors x (64 image + 8 text tokens) x 64 features x fp32,
    # per conditioning (cond and uncond); full mode keeps (2 x 2 double + 2 single) such stacks and clusters
    assert s["peak_cache_bytes"] == 2 * 2 * 72 * 64 * 4
    assert last_summary(full)["peak_cache_bytes"] > 6 * s["peak_cache_bytes"]
    assert s["tokens_per_cached_step"] == {}


@pytest.mark.parametrize("bad", [dict(cache_dtype="int3"), dict(cache_device="tpu"), dict(memory_mode="tiny")])
def test_memory_inputs_are_validated(bad):
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    msg = node.validate_inputs(**bad)
    assert isinstance(msg, str) and list(bad)[0] in msg


# -- modes ----------------------------------------------------------------------------------------------

def test_modes_taylorseer_and_fora_are_what_they_say():
    m = tiny_flux(0)
    pos, neg = flux_cond(1), flux_cond(2)
    run = lambda model: sample(model, pos, neg, steps=10, cfg=2.0)  # noqa: E731
    assert torch.equal(run(apply_node(m, mode="taylorseer")), run(apply_node(m, clusters=0)))
    assert torch.equal(run(apply_node(m, mode="fora", taylor_order=2)), run(apply_node(m, clusters=0, taylor_order=0)))
    assert not torch.equal(run(apply_node(m, mode="clusca")), run(apply_node(m, clusters=0)))


def test_error_mode_corrects_clusters_and_reports_probe_errors(caplog):
    m = tiny_flux(0)
    pos, neg = flux_cond(1), flux_cond(2)
    base = sample(m, pos, neg, steps=10, cfg=2.0)
    patched = apply_node(m, mode="clusca-error", verbose=True)
    with caplog.at_level("INFO", logger="ClusCa"):
        out = sample(patched, pos, neg, steps=10, cfg=2.0)
    s = last_summary(patched)
    assert s["mode"] == "clusca-error" and torch.isfinite(out).all() and psnr(out, base) > 20
    assert len(s["probe_errors"]) == s["cached_steps"] > 0
    assert all(math.isfinite(e) and e > 0.0 for _, _, e in s["probe_errors"])
    assert sum("forecast error at the representatives" in r.getMessage() for r in caplog.records) == s["cached_steps"]
    ts = sample(apply_node(m, mode="taylorseer"), pos, neg, steps=10, cfg=2.0)
    assert not torch.equal(out, ts)
