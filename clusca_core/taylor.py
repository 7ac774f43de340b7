"""TaylorSeer factor stacks: forecast a branch's output from its values at the last full steps."""

from __future__ import annotations

import math
from typing import Optional

import torch


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Differences are formed in at least float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class TaylorCache:
    """The Taylor factors F_0..F_order of one cached branch.

    At a full step at position ``s`` with fresh value ``v``: ``F_0 = v`` and
    ``F_{i+1} = (F_i(new) - F_i(old)) / (s - s_old)``, as far as older factors exist (the order grows with
    the number of full steps seen, up to ``order``). A second full evaluation at the same position (e.g.
    Heun's corrector and the next step's predictor share a sigma) replaces ``F_0`` and keeps the derivatives.
    A forecast ``d`` steps after the last full step is ``sum_i F_i d^i / i!``; order 0 is plain reuse.
    Differences are formed in float32 and stored in ``dtype`` (default: the value's dtype).
    """

    __slots__ = ("order", "dtype", "factors", "position")

    def __init__(self, order: int, dtype: Optional[torch.dtype] = None):
        if order < 0:
            raise ValueError("order must be >= 0")
        self.order = order
        self.dtype = dtype
        self.factors: list[torch.Tensor] = []
        self.position: Optional[float] = None

    def update(self, value: torch.Tensor, position: float) -> None:
        dtype = self.dtype or value.dtype
        new = [value.detach().to(dtype).contiguous()]
        if self.factors and self.position is not None:
            delta = float(position) - self.position
            if abs(delta) < 1e-9:
                new.extend(self.factors[1:])
            else:
                work = _working_dtype(dtype)
                prev = new[0].to(work)
                for i in range(min(self.order, len(self.factors))):
                    diff = (prev - self.factors[i].to(work)) / delta
                    new.append(diff.to(dtype))
                    prev = diff
        self.factors = new
        self.position = float(position)

    @property
    def ready(self) -> bool:
        return bool(self.factors)

    def distance(self, position: float) -> float:
        return float(position) - self.position

    def predict(self, position: float) -> torch.Tensor:
        """Forecast at ``position``; a new tensor (the factors are never modified)."""
        if not self.factors:
            raise RuntimeError("TaylorCache.predict called before any full step was recorded")
        d = self.distance(position)
        out = self.factors[0].clone()
        for i in range(1, len(self.factors)):
            coef = d ** i / math.factorial(i)
            if coef != 0.0:
                out.add_(self.factors[i], alpha=coef)
        return out

    def add_forecast(self, base: torch.Tensor, gate: torch.Tensor, position: float,
                     out: torch.Tensor) -> torch.Tensor:
        """``out = base + gate * forecast(position)`` without materialising the forecast (``out`` may be
        ``base`` itself). One fused pass per Taylor factor."""
        if not self.factors:
            raise RuntimeError("TaylorCache.add_forecast called before any full step was recorded")
        d = self.distance(position)
        f0 = self.factors[0] if self.factors[0].dtype == out.dtype else self.factors[0].to(out.dtype)
        torch.addcmul(base, gate, f0, out=out)
        for i in range(1, len(self.factors)):
            coef = d ** i / math.factorial(i)
            if coef != 0.0:
                fi = self.factors[i] if self.factors[i].dtype == out.dtype else self.factors[i].to(out.dtype)
                out.addcmul_(gate, fi, value=coef)
        return out

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.factors)

    def clear(self) -> None:
        self.factors = []
        self.position = None
