"""Compact storage of Taylor factors: one byte (or half a byte) per value with one float32 scale per token row.

A factor (rows, tokens, features) is stored as ``data = code(x / scale)`` with ``scale = amax / MAX`` over the
features of each token, in one of these codes:

- float8 e4m3 (:class:`Fp8Rows`, ``MAX`` = 448, e4m3's largest finite value): about 3 significant bits per value
  (relative rounding error at most 2^-4 of the value);
- int8 (:class:`Int8Rows`, ``MAX`` = 127): a uniform grid, rounding error at most ``amax / 254`` per value
  (finer than e4m3 for the values near the row's largest, coarser for the smallest ones);
- int4 (:class:`Int4Rows`, ``MAX`` = 7, two values per byte): for the higher-order differences only (an odd
  feature count stays int8).

Each costs one byte (int4: half a byte) per value plus four per token.
"""

from __future__ import annotations

from typing import Optional

import torch

from .tokens import gather_tokens

FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0
INT8_MAX = 127.0


def available() -> bool:
    return FP8 is not None


_TABLES: dict = {}


def decode_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The value of each of the 256 float8 e4m3 codes in ``dtype`` (exact in fp32, bf16 and fp16)."""
    key = (dtype, str(device))
    table = _TABLES.get(key)
    if table is None:
        codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
        table = _TABLES[key] = codes.view(FP8).to(torch.float32).to(device=device, dtype=dtype)
    return table


class ScaledRows:
    """One factor in a one-byte code with a per-token-row float32 scale (the subclasses say which code)."""

    __slots__ = ("data", "scale")
    #: the largest code value a row's largest magnitude maps to
    MAX = 1.0
    #: bytes per value, and per token row (its float32 scale)
    VALUE_BYTES, ROW_BYTES = 1, 4

    @classmethod
    def stored_bytes(cls, rows: int, features: int) -> int:
        """Bytes of ``rows`` token rows of ``features`` values in this code (what ``nbytes`` reports)."""
        return rows * (features * cls.VALUE_BYTES + cls.ROW_BYTES)

    def __init__(self, data: torch.Tensor, scale: torch.Tensor):
        self.data = data        # (B, N, D) one byte per value
        self.scale = scale      # (B, N, 1) float32

    @classmethod
    def encode(cls, x: torch.Tensor) -> "ScaledRows":
        xf = x.detach().float()
        scale = (xf.abs().amax(dim=-1, keepdim=True) / cls.MAX).clamp_min_(1e-30)
        return cls(cls._codes(xf / scale), scale)

    @staticmethod
    def _codes(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _values(self, data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The code values of ``data`` in ``dtype`` (a new tensor)."""
        return data.to(dtype)

    def decode(self, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
        data, scale = self.data, self.scale
        if device is not None and data.device != torch.device(device):
            data, scale = data.to(device, non_blocking=True), scale.to(device, non_blocking=True)
        return self._values(data, dtype).mul_(scale.to(dtype))

    def gather(self, index: torch.Tensor) -> "ScaledRows":
        """The rows ``index`` (B, K) only."""
        return type(self)(self._gather_codes(index), gather_tokens(self.scale, index))

    def _gather_codes(self, index: torch.Tensor) -> torch.Tensor:
        return gather_tokens(self.data, index)

    def map(self, fn) -> "ScaledRows":
        """The same factor with ``fn`` applied to both tensors (e.g. a device move)."""
        return type(self)(fn(self.data), fn(self.scale))

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.scale.numel() * self.scale.element_size()


class Fp8Rows(ScaledRows):
    """One factor in float8 e4m3 with a per-token-row float32 scale."""

    __slots__ = ()
    MAX = FP8_MAX

    @staticmethod
    def _codes(x: torch.Tensor) -> torch.Tensor:
        if FP8 is None:
            raise RuntimeError("this torch has no float8_e4m3fn; use another cache_dtype")
        return x.to(FP8)

    def _values(self, data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if data.device.type == "cpu":
            # a 256-entry table lookup: about 5x faster than torch's float8 conversion on CPU, same values
            codes = data.view(torch.uint8).reshape(-1).to(torch.int32)
            return decode_table(dtype, data.device).index_select(0, codes).view(data.shape)
        return data.to(dtype)

    def _gather_codes(self, index: torch.Tensor) -> torch.Tensor:
        return gather_tokens(self.data.view(torch.uint8), index).view(FP8)


class Int8Rows(ScaledRows):
    """One factor in int8 (round to nearest) with a per-token-row float32 scale."""

    __slots__ = ()
    MAX = INT8_MAX

    @staticmethod
    def _codes(x: torch.Tensor) -> torch.Tensor:
        return x.round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)


class Int4Rows(ScaledRows):
    """One factor in 4-bit integers (round to nearest, -7..7), two per byte along the features, with a
    per-token-row float32 scale: rounding error at most ``amax / 14`` per value. A factor with an odd number of
    features is stored as :class:`Int8Rows` instead."""

    __slots__ = ()
    MAX = 7.0

    @classmethod
    def encode(cls, x: torch.Tensor) -> ScaledRows:
        return Int8Rows.encode(x) if x.shape[-1] % 2 else super().encode(x)

    @classmethod
    def stored_bytes(cls, rows: int, features: int) -> int:
        return Int8Rows.stored_bytes(rows, features) if features % 2 else rows * (features // 2 + cls.ROW_BYTES)

    @staticmethod
    def _codes(x: torch.Tensor) -> torch.Tensor:
        q = (x.round_().clamp_(-7.0, 7.0) + 8.0).to(torch.uint8)          # 1..15
        return q[..., 0::2] | (q[..., 1::2] << 4)

    def _values(self, data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        pairs = torch.stack((data & 15, data >> 4), dim=-1)
        return pairs.view(*data.shape[:-1], 2 * data.shape[-1]).to(dtype).sub_(8.0)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.data.shape[:-1], 2 * self.data.shape[-1]))


#: cache_dtype names -> the code of the order-0 factor and the code of the differences (order >= 1); None =
#: the dense dtype of the values
COMPACT = {"fp8": (Fp8Rows, Fp8Rows), "fp8-diff": (None, Fp8Rows), "int8": (Int8Rows, Int8Rows),
           "int8-int4": (Int8Rows, Int4Rows)}
