"""Cached steps compute only the modulation they use: the same values as the blocks' own modulation."""

from __future__ import annotations

import pytest
import torch

from family_checks import apply_node
from devkit.comfy_env import pack_module
from devkit.tiny_dit import tiny_dit
from devkit.tiny_models import flux_cond, sample, tiny_flux, tiny_hunyuan_video

flux_layers = pack_module("nodes.families.flux_layers")
dit_family = pack_module("nodes.families.dit")
modulation = pack_module("nodes.adapters.modulation")


def same_parts(partial: dict, full: dict) -> None:
    """Every part the cached modulation gives equals the full one's; the gates are always there."""
    assert set(partial) == set(full)
    for name, mod in partial.items():
        assert mod.gate is not None
        for part in ("shift", "scale", "gate"):
            got = getattr(mod, part)
            if got is not None:
                torch.testing.assert_close(got, getattr(full[name], part), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: tiny_flux(0), lambda: tiny_hunyuan_video(0)])
def test_flux_layout_cached_modulation_equals_the_blocks_own(make):
    dm = make().model.diffusion_model
    vec = torch.randn(2, dm.double_blocks[0].img_mod.lin.in_features)
    args = {"vec": vec}
    d = flux_layers.double_cached_modulation(dm.double_blocks[0], args, {})
    same_parts(d, flux_layers.double_modulation(dm.double_blocks[0], args, {}))
    assert d["img_attn"].shift is None and d["img_mlp"].shift is not None     # attention's input is not needed
    s = flux_layers.single_cached_modulation(dm.single_blocks[0], args, {})
    same_parts(s, flux_layers.single_modulation(dm.single_blocks[0], args, {}))
    assert s["mod"].shift is None and s["mod"].scale is None


def test_dit_cached_modulation_equals_the_blocks_own():
    block = tiny_dit(0).model.diffusion_model.blocks[0]
    args = {"vec": torch.randn(2, block.adaLN_modulation[1].in_features)}
    part = dit_family.cached_modulation(block, args, {})
    same_parts(part, dit_family.modulation(block, args, {}))
    assert part["msa"].shift is None


def test_only_plain_weights_are_sliced():
    lin = torch.nn.Linear(4, 12)
    x = torch.randn(3, 4)
    want = lin(x).chunk(3, -1)[1:]
    got = modulation.modulation_chunks(lin, x, 3, 1, 2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert modulation._plain(lin)
    lin.weight_function = [lambda w: w * 2]        # a patch applied when the layer runs: never sliced
    assert not modulation._plain(lin)
    lin.weight_function = []
    lin.to(torch.float8_e4m3fn)
    assert not modulation._plain(lin)
    with pytest.raises(ValueError):
        modulation.modulation_chunks(torch.nn.Linear(4, 10), x, 3, 0, 1)


def test_runs_use_the_partial_modulation_and_stay_close():
    """A tiny FLUX run: ClusCa with the partial modulation against the same run with the blocks' full
    modulation on cached steps (the spec entry swapped back): the same output up to float rounding."""
    calls = []
    original = flux_layers.double_cached_modulation

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    m = tiny_flux(0)
    kind = flux_layers.DOUBLE
    object.__setattr__(kind, "cached_modulation", counting)
    try:
        fast = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
        object.__setattr__(kind, "cached_modulation", None)
        slow = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    finally:
        object.__setattr__(kind, "cached_modulation", original)
    assert calls
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_a_partial_modulation_that_differs_is_caught_and_the_run_uses_the_full_one(caplog):
    """The first cached call of a run checks the partial modulation against the blocks' own: a wrong one (here
    gates doubled) is reported and replaced for the whole run, so the output is that of the full modulation."""
    kind = flux_layers.DOUBLE
    original = kind.cached_modulation

    def wrong(block, args, extras):
        mods = original(block, args, extras)
        return {k: type(m)(m.shift, m.scale, m.gate * 2) for k, m in mods.items()}

    m = tiny_flux(0)
    try:
        object.__setattr__(kind, "cached_modulation", None)
        want = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
        object.__setattr__(kind, "cached_modulation", wrong)
        with caplog.at_level("WARNING", logger="ClusCa"):
            got = sample(apply_node(m), flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    finally:
        object.__setattr__(kind, "cached_modulation", original)
    assert any("partial modulation" in r.getMessage() for r in caplog.records)
    assert torch.equal(got, want)
