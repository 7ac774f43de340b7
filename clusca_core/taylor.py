"""TaylorSeer factor stacks: forecast a branch's output from its values at the last full steps."""

from __future__ import annotations

import math
from typing import Optional

import torch

from .compact import COMPACT, ScaledRows
from .tokens import gather_tokens


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Differences are formed in at least float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _gather(f, index: torch.Tensor):
    return f.gather(index) if isinstance(f, ScaledRows) else gather_tokens(f, index)


class TaylorCache:
    """The Taylor factors F_0..F_order of one cached branch.

    At a full step at position ``s`` with fresh value ``v``: ``F_0 = v`` and
    ``F_{i+1} = (F_i(new) - F_i(old)) / (s - s_old)``, as far as older factors exist (the order grows with
    the number of full steps seen, up to ``order``). A second full evaluation at the same position (e.g.
    Heun's corrector and the next step's predictor share a sigma) replaces ``F_0`` and keeps the derivatives.
    A forecast ``d`` steps after the last full step is ``sum_i F_i d^i / i!``; order 0 is plain reuse.
    Differences are formed in float32 and stored in ``dtype`` (default: the value's dtype).
    """

    __slots__ = ("order", "dtype", "device", "factors", "position", "codes", "value_dtype")

    def __init__(self, order: int, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None,
                 compact: Optional[str] = None):
        if order < 0:
            raise ValueError("order must be >= 0")
        self.order = order
        self.dtype = dtype
        #: compact storage (``compact.COMPACT``): the code of the order-0 factor and of the differences, each a
        #: :class:`~.compact.ScaledRows` class (per-token scales) or None (dense)
        self.codes = (None, None) if compact is None else COMPACT[compact]
        #: dtype of the recorded values (what a compact factor is decoded to)
        self.value_dtype: Optional[torch.dtype] = None
        #: where the factors are stored (None: with the values). A CPU store for CUDA values uses pinned
        #: memory and asynchronous copies; forecasts bring the factors back to the compute device.
        self.device = None if device is None else torch.device(device)
        self.factors: list[torch.Tensor] = []
        self.position: Optional[float] = None

    def _pack(self, t: torch.Tensor, order: int):
        """Factor ``order`` as stored: in its compact code (``codes``, with scales) where it has one, else ``t``."""
        code = self.codes[min(order, 1)]
        if code is not None:
            return code.encode(t).map(self._store)
        return self._store(t)

    def _dense(self, f, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """A stored factor as a tensor on ``device`` (in ``dtype``; a compact one in the values' dtype)."""
        if isinstance(f, ScaledRows):
            return f.decode(dtype or self.value_dtype or torch.float32, device)
        return self._fetch(f, device, dtype)

    def _store(self, t: torch.Tensor) -> torch.Tensor:
        if self.device is None or t.device == self.device:
            return t.contiguous()
        if self.device.type == "cpu" and t.device.type == "cuda":
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            return host.copy_(t, non_blocking=True)
        return t.to(self.device, non_blocking=True).contiguous()

    def _fetch(self, t: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if t.device != device:
            t = t.to(device, non_blocking=True)
        return t if dtype is None or t.dtype == dtype else t.to(dtype)

    def update(self, value: torch.Tensor, position: float) -> None:
        dtype = self.dtype or value.dtype
        value = value.detach()
        self.value_dtype = value.dtype
        new = [value.to(dtype)]
        if self.factors and self.position is not None:
            delta = float(position) - self.position
            if abs(delta) < 1e-9:
                self.factors = [self._pack(new[0], 0)] + self.factors[1:]
                self.position = float(position)
                return
            work = _working_dtype(dtype)
            prev = value.to(work)
            for i in range(min(self.order, len(self.factors))):
                diff = (prev - self._dense(self.factors[i], value.device, work)) / delta
                new.append(diff.to(dtype))
                prev = diff
        self.factors = [self._pack(f, i) for i, f in enumerate(new)]
        self.position = float(position)

    @property
    def ready(self) -> bool:
        return bool(self.factors)

    def distance(self, position: float) -> float:
        return float(position) - self.position

    def _higher_terms(self, position: float):
        """``(F_i, d^i / i!)`` for i >= 1 at ``position``, leaving out zero coefficients."""
        d = self.distance(position)
        for i in range(1, len(self.factors)):
            coef = d ** i / math.factorial(i)
            if coef != 0.0:
                yield self.factors[i], coef

    def predict(self, position: float) -> torch.Tensor:
        """Forecast at ``position``; a new tensor (the factors are never modified)."""
        if not self.factors:
            raise RuntimeError("TaylorCache.predict called before any full step was recorded")
        f0 = self.factors[0]
        out = f0.decode(self.value_dtype) if isinstance(f0, ScaledRows) else f0.clone()
        for factor, coef in self._higher_terms(position):
            out.add_(self._dense(factor, out.device, out.dtype), alpha=coef)
        return out

    def forecast_rows(self, index: torch.Tensor, position: float, device=None, dtype=None) -> torch.Tensor:
        """The forecast of the tokens ``index`` (B, K) only: (B, K, D), without touching the other tokens."""
        device = torch.device(device) if device is not None else index.device
        idx = index.to(self.factors[0].device)
        out = self._dense(_gather(self.factors[0], idx), device, dtype).clone()
        for factor, coef in self._higher_terms(position):
            out.add_(self._dense(_gather(factor, idx), device, out.dtype), alpha=coef)
        return out

    def order0_on(self, device: torch.device) -> torch.Tensor:
        """``F_0`` on ``device`` for an in-place update; pass the result to ``write_order0`` afterwards."""
        return self._dense(self.factors[0], torch.device(device))

    def write_order0(self, value: torch.Tensor) -> None:
        """Store an updated ``F_0`` (a no-op when ``value`` is the stored tensor itself)."""
        f0 = self.factors[0]
        if isinstance(f0, ScaledRows):
            self.factors[0] = self._pack(value, 0)
        elif value is not f0:
            f0.copy_(value, non_blocking=True)

    def add_forecast(self, base: torch.Tensor, gate: torch.Tensor, position: float,
                     out: torch.Tensor) -> torch.Tensor:
        """``out = base + gate * forecast(position)`` without materialising the forecast (``out`` may be
        ``base`` itself; ``gate`` None = 1). One fused pass per Taylor factor."""
        if not self.factors:
            raise RuntimeError("TaylorCache.add_forecast called before any full step was recorded")
        if gate is None:     # an ungated branch
            torch.add(base, self._dense(self.factors[0], out.device, out.dtype), out=out)
            for factor, coef in self._higher_terms(position):
                out.add_(self._dense(factor, out.device, out.dtype), alpha=coef)
            return out
        torch.addcmul(base, gate, self._dense(self.factors[0], out.device, out.dtype), out=out)
        for factor, coef in self._higher_terms(position):
            out.addcmul_(gate, self._dense(factor, out.device, out.dtype), value=coef)
        return out

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes if isinstance(f, ScaledRows) else f.numel() * f.element_size() for f in self.factors)

    def clear(self) -> None:
        self.factors = []
        self.position = None
