"""The cache-size formula (clusca_core.memory, benchmarks.memory) against what real runs keep."""

from __future__ import annotations

import pytest
import torch

from family_checks import apply_node, last_summary
from devkit.tiny_models import flux_cond, sample, tiny_flux
from devkit.tiny_wan import ksample, tiny_wan, wan_cond

from benchmarks.memory import family_spec, geometry_from_family, table
from clusca_core.memory import ModelGeometry, BlockGroup, CachedStream, cache_bytes, factors_kept

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def predicted(summary, family: str, hidden: int, conditionings: int, **settings) -> int:
    """The formula's bytes for the geometry the run reports (blocks per kind, image and text tokens)."""
    spec = family_spec(family)
    counts = [int(c) for c in str(summary["geometry"]["blocks"]).split("+")]
    blocks = {k.key: c for k, c in zip(spec.block_kinds, counts)}
    geom = geometry_from_family(spec, family, blocks, hidden, summary["geometry"]["image tokens"],
                                summary["geometry"].get("text tokens", 0))
    return cache_bytes(geom, conditionings=conditionings, **settings)["total"]


@pytest.mark.parametrize("settings", [
    dict(),
    dict(cache_dtype="bf16"),
    dict(taylor_order=2, clusters=4),
    dict(memory_mode="lite", mode="taylorseer"),
    dict(cache_dtype="fp8"),
    dict(cache_dtype="fp8-diff", taylor_order=2),
    dict(cache_dtype="int8", taylor_order=2),
    dict(cache_dtype="int8-int4", taylor_order=2),
])
def test_formula_matches_the_peak_cache_bytes_of_a_tiny_flux_run(settings):
    m = apply_node(tiny_flux(0), **settings)
    sample(m, flux_cond(1), flux_cond(2), steps=12, cfg=2.0)
    s = last_summary(m)
    dtype = settings.get("cache_dtype", "fp32")
    expected = predicted(s, "flux", 64, 2, order=settings.get("taylor_order", 1), dtype=dtype,
                         memory_mode=settings.get("memory_mode", "full"), clusters=settings.get("clusters", 16),
                         value_dtype="fp32")
    assert s["peak_cache_bytes"] == expected


@pytest.mark.parametrize("settings", [dict(), dict(cache_dtype="bf16", taylor_order=2)])
def test_formula_matches_the_peak_cache_bytes_of_a_tiny_wan_run(settings):
    m = apply_node(tiny_wan("t2v", 0), **settings)
    ksample(m, wan_cond(1), wan_cond(2), torch.zeros(1, 16, 3, 8, 8), steps=12)
    s = last_summary(m)
    expected = predicted(s, "wan", 64, 2, order=settings.get("taylor_order", 1),
                         dtype=settings.get("cache_dtype", "fp32"))
    assert s["peak_cache_bytes"] == expected


def test_formula_by_hand_for_flux1_dev_at_1024():
    """19 double blocks x (2 x 4096 + 2 x 512) rows + 38 single blocks x 4608 rows, 2 factors, bf16."""
    rows = {r["model"]: r for r in table()}
    flux = rows["FLUX.1-dev 1024x1024"]["bytes"]
    factor_rows = 19 * (2 * 4096 + 2 * 512) + 38 * 4608
    clusters = (4096 + 512 + 4608) * 8 + (16 + 16) * 3072 * 4
    assert flux["full, order 1, bf16"] == 2 * factor_rows * 3072 * 2 + clusters
    assert flux["full, order 1, fp8"] == 2 * factor_rows * (3072 + 4) + clusters
    assert flux["full, order 1, fp8-diff"] == factor_rows * (3072 * 2 + 3072 + 4) + clusters
    assert flux["full, order 1, int8"] == flux["full, order 1, fp8"]
    assert flux["full, order 1, int8-int4"] == factor_rows * (3072 + 4 + 3072 // 2 + 4) + clusters
    assert flux["lite, order 1, bf16"] == 2 * 4608 * 3072 * 2


def test_factors_grow_with_the_full_steps_seen():
    geom = ModelGeometry("x", 8, (BlockGroup(2, (CachedStream(10, 2),)),), clustered=(10,))
    assert factors_kept(2, 1) == 1 and factors_kept(2, 5) == 3 and factors_kept(1) == 2
    one = cache_bytes(geom, order=2, dtype="fp32", full_steps=1)["factors"]
    assert cache_bytes(geom, order=2, dtype="fp32")["factors"] == 3 * one == 3 * 40 * 8 * 4
    with pytest.raises(ValueError):
        cache_bytes(geom, dtype="int3")


@pytest.mark.parametrize("compact", ["fp8", "fp8-diff", "int8", "int8-int4"])
def test_compact_cache_runs_on_tiny_flux_with_fewer_bytes_and_close_output(compact):
    m = tiny_flux(0)
    base = sample(m, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    full = apply_node(m)
    small = apply_node(m, cache_dtype=compact)
    out_full = sample(full, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    out_small = sample(small, flux_cond(1), flux_cond(2), steps=10, cfg=2.0)
    s = last_summary(small)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert s["peak_cache_bytes"] < (0.7 if compact == "fp8-diff" else 0.3) * last_summary(full)["peak_cache_bytes"]
    assert torch.isfinite(out_small).all() and not torch.equal(out_small, out_full)
    from devkit.metrics import psnr
    assert psnr(out_small, out_full) > 30 and psnr(out_small, base) > 20


def test_4_bit_differences_of_an_odd_width_are_counted_as_int8_as_they_are_stored():
    from clusca_core.compact import Int4Rows, Int8Rows
    from clusca_core.memory import stack_bytes
    for width in (6, 7):
        x = torch.randn(1, 3, width)
        stored = Int4Rows.encode(x)
        assert Int8Rows.encode(x).nbytes + stored.nbytes == stack_bytes(3, width, 2, "int8-int4")
        assert isinstance(stored, Int8Rows) == bool(width % 2)
