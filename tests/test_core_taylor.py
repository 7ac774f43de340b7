import math

import pytest
import torch

from clusca_core.taylor import TaylorCache


def feed(cache, fn, positions):
    for p in positions:
        cache.update(fn(p), p)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_linear_functions_are_forecast_exactly(order):
    a, b = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    f = lambda s: a + b * s  # noqa: E731
    cache = TaylorCache(order)
    feed(cache, f, [0.0, 1.0, 2.0, 7.0])
    for s in (7.0, 8.0, 9.5, 11.0):
        torch.testing.assert_close(cache.predict(s), f(s), rtol=1e-12, atol=1e-12)


def test_order_zero_is_plain_reuse():
    cache = TaylorCache(0)
    feed(cache, lambda s: torch.full((1, 2, 2), s), [0.0, 1.0, 2.0])
    assert len(cache.factors) == 1
    torch.testing.assert_close(cache.predict(6.0), torch.full((1, 2, 2), 2.0))


def test_factors_are_divided_differences():
    c = torch.randn(1, 4, 2, dtype=torch.float64)
    f = lambda s: c * s * s  # noqa: E731
    cache = TaylorCache(2)
    feed(cache, f, [2.0, 5.0, 8.0])          # step distance 3
    f0, f1, f2 = cache.factors
    torch.testing.assert_close(f0, f(8.0))
    torch.testing.assert_close(f1, (f(8.0) - f(5.0)) / 3)
    torch.testing.assert_close(f2, 2 * c)    # second difference of c*s^2 over a uniform grid is exactly 2c
    d = 2.0
    expected = f0 + f1 * d + f2 * d * d / math.factorial(2)
    torch.testing.assert_close(cache.predict(10.0), expected)


def test_order_grows_with_full_steps_and_is_capped():
    cache = TaylorCache(2)
    for i, p in enumerate([0.0, 1.0, 2.0, 3.0, 4.0]):
        cache.update(torch.zeros(1, 1, 1), p)
        assert len(cache.factors) == min(i + 1, 3)


def test_same_position_replaces_value_keeps_derivatives():
    cache = TaylorCache(1)
    cache.update(torch.tensor([[[0.0]]]), 0.0)
    cache.update(torch.tensor([[[2.0]]]), 1.0)
    cache.update(torch.tensor([[[3.0]]]), 1.0)   # Heun: a second full evaluation at the same sigma
    assert float(cache.factors[0]) == 3.0 and float(cache.factors[1]) == 2.0
    assert float(cache.predict(2.0)) == 5.0


def test_add_forecast_matches_predict_and_gates():
    cache = TaylorCache(2)
    f = lambda s: torch.sin(torch.arange(12.0).view(1, 4, 3) + s)  # noqa: E731
    feed(cache, f, [0.0, 1.0, 3.0])
    base = torch.randn(1, 4, 3)
    gate = torch.randn(1, 1, 3)
    out = cache.add_forecast(base, gate, 4.5, out=torch.empty_like(base))
    torch.testing.assert_close(out, base + gate * cache.predict(4.5))
    inplace = base.clone()
    cache.add_forecast(inplace, gate, 4.5, out=inplace)
    torch.testing.assert_close(inplace, out)


def test_low_precision_storage_and_bytes():
    cache = TaylorCache(1, dtype=torch.bfloat16)
    feed(cache, lambda s: torch.full((2, 8, 4), s), [0.0, 2.0])
    assert all(f.dtype == torch.bfloat16 for f in cache.factors)
    assert cache.nbytes == 2 * 2 * 8 * 4 * 2
    cache.clear()
    assert not cache.ready and cache.nbytes == 0
    with pytest.raises(RuntimeError):
        cache.predict(1.0)
