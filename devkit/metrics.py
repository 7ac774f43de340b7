"""Fidelity metrics between a cached result and the uncached reference (tensors of the same shape)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of ``a`` against reference ``b``, with the reference's peak absolute value as the peak."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    peak = float(b.float().abs().max()) ** 2
    return float("inf") if mse == 0 else 10 * math.log10(peak / mse)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> float:
    """Mean SSIM over channels (and frames) with a uniform window; inputs (..., H, W), data range from b."""
    a = a.float().reshape(-1, 1, *a.shape[-2:])
    b = b.float().reshape(-1, 1, *b.shape[-2:])
    rng = float(b.max() - b.min()) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    win = min(window, a.shape[-1], a.shape[-2])
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a ** 2
    var_b = pool(b * b) - mu_b ** 2
    cov = pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
