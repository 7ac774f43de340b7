"""Compact (float8 e4m3, per-token scale) storage of Taylor factors."""

import pytest
import torch

from clusca_core.compact import COMPACT, Fp8Rows, Int4Rows, Int8Rows, available
from clusca_core.propagation import propagate_fresh
from clusca_core.taylor import TaylorCache

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no float8_e4m3fn")

#: e4m3 keeps 3 mantissa bits: a value is rounded to within 2^-4 of itself (relative), and values far
#: below their row's largest one also lose to the row scale (subnormals), so the bound is on the row maximum
REL = 2.0 ** -4


def test_round_trip_is_within_fp8_rounding_per_token_row():
    g = torch.Generator().manual_seed(0)
    # rows of very different magnitudes: a per-row scale keeps each one's relative precision
    x = torch.randn(2, 6, 32, generator=g) * torch.logspace(-4, 4, 6).view(1, 6, 1)
    f = Fp8Rows.encode(x)
    assert f.data.dtype == torch.float8_e4m3fn and f.scale.shape == (2, 6, 1)
    err = (f.decode() - x).abs().amax(dim=-1)
    assert (err <= REL * x.abs().amax(dim=-1)).all()
    assert not torch.equal(f.decode(), x)            # it is lossy: the test measures a real rounding
    assert f.nbytes == 2 * 6 * 32 + 2 * 6 * 4
    idx = torch.tensor([[5, 0], [2, 3]])
    torch.testing.assert_close(f.gather(idx).decode(), torch.stack([f.decode()[0, [5, 0]], f.decode()[1, [2, 3]]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_cpu_decode_table_gives_torchs_own_conversion_for_every_code(dtype):
    from clusca_core.compact import decode_table
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
    want = codes.to(torch.float32).to(dtype)
    got = decode_table(dtype, torch.device("cpu"))
    assert got.dtype == dtype
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~got.isnan()], want[~want.isnan()])
    x = torch.randn(1, 4, 16, dtype=dtype)
    f = Fp8Rows.encode(x)
    assert torch.equal(f.decode(dtype), f.data.to(dtype) * f.scale.to(dtype))


def test_int8_round_trip_is_within_half_a_step_of_the_row_grid():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 32, generator=g) * torch.logspace(-4, 4, 6).view(1, 6, 1)
    f = Int8Rows.encode(x)
    assert f.data.dtype == torch.int8 and f.scale.shape == (2, 6, 1) and f.data.abs().max() == 127
    amax = x.abs().amax(dim=-1)
    err = (f.decode() - x).abs().amax(dim=-1)
    assert (err <= amax / 254 * 1.0001).all() and (err > 0).any()
    assert f.nbytes == 2 * 6 * 32 + 2 * 6 * 4
    idx = torch.tensor([[5, 0], [2, 3]])
    torch.testing.assert_close(f.gather(idx).decode(), torch.stack([f.decode()[0, [5, 0]], f.decode()[1, [2, 3]]]))
    assert torch.equal(f.decode(torch.bfloat16), f.data.to(torch.bfloat16) * f.scale.to(torch.bfloat16))


def test_int4_round_trip_is_within_half_a_step_and_packs_two_values_per_byte():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 16, generator=g) * torch.logspace(-3, 3, 5).view(1, 5, 1)
    f = Int4Rows.encode(x)
    assert f.data.dtype == torch.uint8 and f.data.shape == (2, 5, 8) and f.shape == (2, 5, 16)
    assert f.nbytes == 2 * 5 * 8 + 2 * 5 * 4
    amax = x.abs().amax(dim=-1)
    err = (f.decode() - x).abs().amax(dim=-1)
    assert (err <= amax / 14 * 1.0001).all() and (err > 0).any()
    # the packing keeps each value in its place: a row with one large value decodes to it at that index only
    one = torch.zeros(1, 1, 6)
    one[0, 0, 3] = -2.5
    torch.testing.assert_close(Int4Rows.encode(one).decode(), one)
    idx = torch.tensor([[4, 0], [1, 1]])
    torch.testing.assert_close(f.gather(idx).decode(), torch.stack([f.decode()[0, [4, 0]], f.decode()[1, [1, 1]]]))
    odd = torch.randn(1, 2, 5, generator=g)     # no pairs to pack: kept in int8, never an error mid-run
    assert isinstance(Int4Rows.encode(odd), Int8Rows)
    torch.testing.assert_close(Int4Rows.encode(odd).decode(), odd, atol=odd.abs().max().item() / 254, rtol=0)


@pytest.mark.parametrize("code", [Fp8Rows, Int8Rows, Int4Rows])
def test_zero_rows_stay_zero(code):
    f = code.encode(torch.zeros(1, 3, 8))
    assert torch.equal(f.decode(), torch.zeros(1, 3, 8))


@pytest.mark.parametrize("compact", ["fp8", "fp8-diff", "int8", "int8-int4"])
def test_compact_factors_forecast_within_fp8_tolerance(compact):
    a, b = torch.randn(1, 16, 24), torch.randn(1, 16, 24)
    f = lambda s: a + b * s  # noqa: E731
    dense, small = TaylorCache(1), TaylorCache(1, compact=compact)
    for p in (0.0, 2.0, 4.0):
        dense.update(f(p), p)
        small.update(f(p), p)
    assert small.nbytes < dense.nbytes
    if compact in ("fp8", "int8"):
        assert small.nbytes == 2 * (16 * 24 + 16 * 4)
    elif compact == "int8-int4":
        assert small.nbytes == 16 * 24 + 16 * 4 + 16 * 12 + 16 * 4
    else:
        assert small.nbytes == 16 * 24 * 4 + 16 * 24 + 16 * 4
    for s in (5.0, 7.0):
        want = dense.predict(s)
        got = small.predict(s)
        assert got.dtype == want.dtype
        # error of F0 (x1) plus F1 (x d) rounding, each within REL of its row maximum (F1 is formed against
        # the stored, rounded F0, hence the factor 2 on F0's share)
        d = s - 4.0
        rel_diff = 1 / 14 if compact == "int8-int4" else REL          # 4-bit differences: half a step of 7
        bound = (REL * 2 * f(4.0).abs().amax(-1, keepdim=True) + rel_diff * d * b.abs().amax(-1, keepdim=True)) * 2
        assert ((got - want).abs() <= bound).all()
        base, gate = torch.randn(1, 16, 24), torch.randn(1, 1, 24)
        torch.testing.assert_close(small.add_forecast(base, gate, s, out=torch.empty_like(base)),
                                   base + gate * got)
        idx = torch.tensor([[3, 9]])
        torch.testing.assert_close(small.forecast_rows(idx, s), got[:, [3, 9]])


def test_compact_order0_refresh_is_written_back():
    cache = TaylorCache(1, compact="fp8")
    cache.update(torch.randn(1, 8, 16), 0.0)
    f0 = cache.order0_on(torch.device("cpu"))
    labels = torch.zeros(1, 8, dtype=torch.long)
    fresh = torch.full((1, 1, 16), 3.0)
    propagate_fresh(f0, labels, torch.tensor([[2]]), fresh, 0.5)
    cache.write_order0(f0)
    stored = cache.order0_on(torch.device("cpu"))
    torch.testing.assert_close(stored[0, 2], fresh[0, 0])          # 3.0 is exact in fp8 with its row scale
    assert (stored - f0).abs().max() <= REL * f0.abs().max()


def test_every_compact_cache_dtype_has_a_code():
    from clusca_core.config import COMPACT_DTYPES
    assert set(COMPACT) == set(COMPACT_DTYPES)
