"""Lifetime: interruption, many back-to-back runs, model unload/reload — nothing leaks, nothing goes stale."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from family_checks import apply_node, last_summary, live_slot_caches
from devkit.comfy_env import REPO
from devkit.lifetime import memory_curve
from devkit.tiny_dit import dit_cond, null_cond, tiny_dit
from devkit.tiny_models import flux_cond, hunyuan_video_cond, sample, tiny_flux, tiny_hunyuan_video

import comfy.model_management

FAMILIES = {
    "flux": (lambda: tiny_flux(0), lambda: (flux_cond(1), flux_cond(2)), lambda: torch.zeros(1, 16, 16, 16)),
    "hunyuan_video": (lambda: tiny_hunyuan_video(0), lambda: (hunyuan_video_cond(1), hunyuan_video_cond(2)),
                      lambda: torch.zeros(1, 16, 3, 8, 8)),
    "dit": (lambda: tiny_dit(0), lambda: (dit_cond(207), null_cond()), lambda: torch.zeros(1, 4, 16, 16)),
}


def go(model, conds, latent, **kw):
    pos, neg = conds
    return sample(model, pos, neg, steps=10, cfg=2.0, latent=latent, **kw)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_interrupted_run_leaves_no_state(family):
    make, conds, latent = FAMILIES[family]
    m = make()
    patched = apply_node(m)

    def interrupt(step, x0, x, total):
        if step == 5:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        go(patched, conds(), latent(), callback=interrupt)
    assert patched.model_options["transformer_options"]["clusca"].run is None
    assert live_slot_caches() == 0
    assert torch.equal(go(apply_node(m, fresh_interval=1), conds(), latent()), go(m, conds(), latent()))
    assert torch.equal(go(patched, conds(), latent()), go(apply_node(m), conds(), latent()))


FRESH_PROCESS = textwrap.dedent("""
    import sys, torch
    sys.path.append({repo!r})
    from devkit.comfy_env import load_pack
    load_pack()
    import nodes
    from devkit.tiny_models import flux_cond, sample, tiny_flux
    m = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=tiny_flux(0)).result[0]
    out = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0, latent=torch.zeros(1, 16, 16, 16))
    torch.save(out, sys.argv[1])
""")


def test_after_an_interrupt_defaults_match_a_fresh_process(tmp_path):
    m = tiny_flux(0)
    patched = apply_node(m)

    def interrupt(step, x0, x, total):
        if step == 4:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        go(patched, (flux_cond(1), flux_cond(2)), torch.zeros(1, 16, 16, 16), callback=interrupt)
    here = go(patched, (flux_cond(1), flux_cond(2)), torch.zeros(1, 16, 16, 16))
    target = tmp_path / "fresh.pt"
    subprocess.run([sys.executable, "-c", FRESH_PROCESS.format(repo=str(REPO)), str(target)], check=True,
                   cwd=str(tmp_path), capture_output=True, timeout=600)
    assert torch.equal(here, torch.load(target))


def test_fifty_back_to_back_runs_keep_memory_flat():
    curve = memory_curve(runs=50)
    assert not any(row["run_state_alive"] for row in curve)
    assert len({row["peak_cache_bytes"] for row in curve}) == 1
    tensors = [row["live_tensors"] for row in curve[5:]]
    assert max(tensors) == min(tensors), tensors
    rss = [row["rss_bytes"] for row in curve]
    assert rss[-1] - rss[9] < 32 * 2**20, f"RSS grew by {(rss[-1] - rss[9]) / 2**20:.1f} MiB over 40 runs"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_unloaded_and_reloaded_between_runs(family):
    make, conds, latent = FAMILIES[family]
    patched = apply_node(make())
    first = go(patched, conds(), latent())
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    again = go(patched, conds(), latent())
    assert torch.equal(first, again)
    assert last_summary(patched)["cached_steps"] > 0
