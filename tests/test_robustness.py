"""The robustness matrix: unusual workflow shapes on tiny models of every supported family.

Every case runs the same workflow three times: without ClusCa, with ClusCa at ``fresh_interval=1`` (must be
bit-identical to the first) and with ClusCa at the node's defaults (must finish with a finite output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from family_checks import apply_node, last_summary, nodes
from devkit.tiny_dit import dit_cond, null_cond, tiny_dit
from devkit.tiny_models import flux_cond, hunyuan_video_cond, sample, tiny_flux, tiny_hunyuan_video

import comfy.samplers
import comfy.utils


@dataclass
class Family:
    name: str
    make: Callable            # (seed, dtype) -> ModelPatcher
    pos: Callable             # (seed, tokens) -> CONDITIONING
    neg: Callable             # () -> CONDITIONING
    latent: Callable          # (batch, scale) -> latent tensor
    lora_key: str             # a weight to put a LoRA-style diff patch on
    images: bool = True       # 2-D latents (areas and masks apply)


FAMILIES = {
    "flux": Family("flux", lambda s, dt: tiny_flux(s, dtype=dt), lambda s, t: flux_cond(s, tokens=t),
                   lambda: flux_cond(99), lambda b, k: torch.zeros(b, 16, 16 * k, 16 * k),
                   "diffusion_model.double_blocks.0.img_mlp.0.weight"),
    "hunyuan_video": Family("hunyuan_video", lambda s, dt: tiny_hunyuan_video(s, dtype=dt),
                            lambda s, t: hunyuan_video_cond(s, tokens=t), lambda: hunyuan_video_cond(99),
                            lambda b, k: torch.zeros(b, 16, 2 + k, 8 * k, 8 * k),
                            "diffusion_model.single_blocks.0.linear1.weight", images=False),
    "dit": Family("dit", lambda s, dt: tiny_dit(s, dtype=dt), lambda s, t: dit_cond((37 * s + t) % 1000),
                  null_cond, lambda b, k: torch.zeros(b, 4, 16 * k, 16 * k), "diffusion_model.blocks.0.mlp.fc1.weight"),
}


def run(f: Family, model, steps=8, cfg=2.0, batch=1, pos=None, neg=None, scale=1, **kw):
    pos = pos if pos is not None else f.pos(1, 8)
    neg = neg if neg is not None else f.neg()
    return sample(model, pos, neg, steps=steps, cfg=cfg, latent=f.latent(batch, scale), **kw)


def with_lora(model, key, seed=5):
    m = model.clone()
    w = comfy.utils.get_attr(m.model, key)
    delta = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)).to(w.dtype) * 0.05
    m.add_patches({key: (delta,)}, strength_patch=1.0)
    return m


def easycache(model, threshold=0.2):
    from comfy_extras.nodes_easycache import EasyCacheNode
    return EasyCacheNode.execute(model=model, reuse_threshold=threshold, start_percent=0.15, end_percent=0.95,
                                 verbose=False).result[0]


def area(cond, h, w, y, x):
    c = [[t, dict(d, area=(h, w, y, x), strength=1.0, set_area_to_bounds=False)] for t, d in cond]
    return c


def hires_fix(f, P, m):
    first = run(f, P(m), steps=6)
    up = comfy.utils.common_upscale(first, first.shape[-1] * 3 // 2, first.shape[-2] * 3 // 2, "nearest-exact", "disabled")
    return sample(P(m), f.pos(1, 8), f.neg(), steps=6, cfg=2.0, latent=up, denoise=0.5)


def two_models(f, P, m):
    other = f.make(1, torch.float32)
    a1 = run(f, P(m))
    b = run(f, P(other))
    a2 = run(f, P(m))
    assert torch.equal(a1, a2)
    return torch.cat([a2, b])


def same_model_two_sizes(f, P, m):
    patched = P(m)
    a = run(f, patched, scale=1)
    b = run(f, patched, scale=2)
    return torch.cat([a.flatten(), b.flatten()])


def removed_between_runs(f, P, m):
    run(f, P(m))
    return run(f, m)


def timestep_range_cond(f, P, m):
    late = [[t, dict(d, start_percent=0.5, end_percent=1.0)] for t, d in f.pos(3, 8)]
    return run(f, P(m), pos=f.pos(1, 8) + late)


def custom_sigmas(f, P, m):
    sigmas = torch.tensor([1.0, 0.93, 0.85, 0.7, 0.55, 0.4, 0.27, 0.15, 0.06, 0.0])
    if f.name == "dit":
        sigmas = torch.tensor([14.6, 9.0, 5.5, 3.2, 1.9, 1.1, 0.6, 0.3, 0.1, 0.0])
    return run(f, P(m), sigmas=sigmas)


# name -> (families it applies to, workflow(f, P, m) -> output)
ALL = ("flux", "hunyuan_video", "dit")
IMAGES = ("flux", "dit")
TEXT = ("flux", "hunyuan_video")
CASES = {
    "batch 1": (ALL, lambda f, P, m: run(f, P(m), batch=1)),
    "batch 2": (ALL, lambda f, P, m: run(f, P(m), batch=2)),
    "batch 3": (IMAGES, lambda f, P, m: run(f, P(m), batch=3)),
    "batch 4": (("flux",), lambda f, P, m: run(f, P(m), batch=4)),
    "cfg split (text lengths differ)": (TEXT, lambda f, P, m: run(f, P(m), pos=f.pos(1, 8), neg=f.pos(2, 7))),
    "cfg 1.0 (no uncond)": (ALL, lambda f, P, m: run(f, P(m), cfg=1.0)),
    "area conds": (IMAGES, lambda f, P, m: run(f, P(m), pos=area(f.pos(1, 8), 8, 16, 0, 0) + area(f.pos(3, 8), 8, 16, 8, 0))),
    "masked cond": (IMAGES, lambda f, P, m: run(f, P(m), pos=[[t, dict(d, mask=torch.linspace(0, 1, 256).view(1, 16, 16), mask_strength=1.0, set_area_to_bounds=False)] for t, d in f.pos(1, 8)] + f.pos(4, 8))),
    "cond active for part of the schedule": (ALL, timestep_range_cond),
    "sampler heun": (ALL, lambda f, P, m: run(f, P(m), sampler="heun")),
    "sampler dpmpp_2m": (ALL, lambda f, P, m: run(f, P(m), sampler="dpmpp_2m")),
    "sampler dpmpp_2m_sde": (ALL, lambda f, P, m: run(f, P(m), sampler="dpmpp_2m_sde")),
    "sampler res_multistep": (("flux", "dit"), lambda f, P, m: run(f, P(m), sampler="res_multistep")),
    "sampler uni_pc": (("flux", "dit"), lambda f, P, m: run(f, P(m), sampler="uni_pc")),
    "sampler dpm_2 (midpoint sigmas)": (("flux",), lambda f, P, m: run(f, P(m), sampler="dpm_2")),
    "scheduler karras": (("flux", "dit"), lambda f, P, m: run(f, P(m), scheduler="karras")),
    "scheduler beta": (("flux", "hunyuan_video"), lambda f, P, m: run(f, P(m), scheduler="beta")),
    "custom sigma list": (ALL, custom_sigmas),
    "1 step": (ALL, lambda f, P, m: run(f, P(m), steps=1)),
    "2 steps": (("flux", "dit"), lambda f, P, m: run(f, P(m), steps=2)),
    "4 steps": (("flux",), lambda f, P, m: run(f, P(m), steps=4)),
    "hires fix: two samplers, second with denoise 0.5": (("flux", "dit"), hires_fix),
    "same patched model, two sizes": (ALL, same_model_two_sizes),
    "two different patched models": (("flux", "hunyuan_video"), two_models),
    "removed between runs": (("flux",), removed_between_runs),
    "LoRA before the node": (ALL, lambda f, P, m: run(f, P(with_lora(m, f.lora_key)))),
    "LoRA after the node": (ALL, lambda f, P, m: run(f, with_lora(P(m), f.lora_key))),
    "EasyCache before the node": (("flux", "hunyuan_video"), lambda f, P, m: run(f, P(easycache(m)), steps=12)),
    "EasyCache after the node": (("flux", "hunyuan_video"), lambda f, P, m: run(f, easycache(P(m)), steps=12)),
    "fp16 model": (("flux", "dit"), lambda f, P, m: run(f, P(f.make(0, torch.float16)))),
    "bf16 model": (ALL, lambda f, P, m: run(f, P(f.make(0, torch.bfloat16)))),
}

PARAMS = [pytest.param(fam, name, id=f"{fam}: {name}") for name, (fams, _) in CASES.items() for fam in fams]


@pytest.fixture(scope="module")
def base_models():
    return {name: f.make(0, torch.float32) for name, f in FAMILIES.items()}


@pytest.mark.parametrize("family,case", PARAMS)
def test_matrix(family, case, base_models):
    f = FAMILIES[family]
    workflow = CASES[case][1]
    m = base_models[family]
    plain = workflow(f, lambda x: x, m)
    exact = workflow(f, lambda x: apply_node(x, fresh_interval=1), m)
    assert torch.equal(exact, plain), "fresh_interval=1 must reproduce the model without ClusCa"
    cached = workflow(f, apply_node, m)
    assert torch.isfinite(cached).all()
    assert cached.shape == plain.shape


def test_matrix_has_at_least_thirty_cases_per_family_set():
    assert len(PARAMS) >= 30


def test_caching_happens_in_the_matrix_workflows(base_models):
    """The matrix is not vacuous: at defaults the workflows above do cache (spot check)."""
    m = apply_node(base_models["flux"])
    run(FAMILIES["flux"], m, sampler="dpmpp_2m_sde")
    assert last_summary(m)["cached_steps"] > 0
    m = apply_node(base_models["dit"])
    run(FAMILIES["dit"], m, pos=area(dit_cond(3), 8, 16, 0, 0) + area(dit_cond(4), 8, 16, 8, 0))
    assert last_summary(m)["cached_steps"] > 0


@pytest.mark.parametrize("order", ["EasyCache after ClusCa", "EasyCache before ClusCa"])
def test_easycache_and_clusca_together_document_what_wins(base_models, order):
    """Both wrappers stay active, whichever node comes first: a step EasyCache skips never runs the
    transformer (ClusCa does not count it), every other step follows ClusCa's schedule."""
    f = FAMILIES["flux"]
    m = base_models["flux"]
    after = order == "EasyCache after ClusCa"
    # a high threshold so that EasyCache really skips steps in 20 steps of the tiny model
    both = easycache(apply_node(m), 3.0) if after else apply_node(easycache(m, 3.0))
    out = run(f, both, steps=20)
    s = last_summary(both)
    assert torch.isfinite(out).all()
    counted = s["evaluations_full"] + s["evaluations_cached"]
    skipped = s["evaluations_skipped_by_other_nodes"]
    assert s["evaluations_full"] > 0 and s["evaluations_cached"] > 0
    if after:     # ClusCa's wrapper is outside: it sees the calls EasyCache then answers from its own cache
        assert skipped > 0 and counted + skipped == 20
    else:         # EasyCache's wrapper is outside: skipped calls never reach ClusCa
        assert skipped == 0 and counted < 20


def test_torch_compile_node_matches_eager(base_models):
    """ComfyUI's TorchCompileModel node on a ClusCa model (CPU, inductor): no crash, same output as eager."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    f = FAMILIES["flux"]
    patched = apply_node(base_models["flux"])
    eager = run(f, patched, steps=6)
    compiled = TorchCompileModel.execute(model=patched, backend="inductor").result[0]
    out = run(f, compiled, steps=6)
    torch.testing.assert_close(out, eager, rtol=1e-3, atol=1e-3)
    assert last_summary(compiled)["cached_steps"] > 0
