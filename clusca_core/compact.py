"""Compact storage of Taylor factors: float8 (e4m3) values with one float32 scale per token row.

A factor (rows, tokens, features) is stored as ``data = round_fp8(x / scale)`` with ``scale = amax / 448`` over
the features of each token (448 is e4m3's largest finite value), i.e. about 3 significant bits per value
(relative rounding error at most 2^-4) at one byte per value plus four per token.
"""

from __future__ import annotations

from typing import Optional

import torch

from .tokens import gather_tokens

FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0
#: cache_dtype names -> which Taylor orders are stored compact: "fp8" all, "fp8-diff" the differences (>= 1)
COMPACT_FROM_ORDER = {"fp8": 0, "fp8-diff": 1}


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


class Fp8Rows:
    """One factor in float8 e4m3 with a per-token-row float32 scale."""

    __slots__ = ("data", "scale")

    def __init__(self, data: torch.Tensor, scale: torch.Tensor):
        self.data = data        # (B, N, D) float8_e4m3fn
        self.scale = scale      # (B, N, 1) float32

    @classmethod
    def encode(cls, x: torch.Tensor) -> "Fp8Rows":
        if FP8 is None:
            raise RuntimeError("this torch has no float8_e4m3fn; use another cache_dtype")
        xf = x.detach().float()
        scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp_min_(1e-30)
        return cls((xf / scale).to(FP8), scale)

    def decode(self, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
        data, scale = self.data, self.scale
        if device is not None and data.device != torch.device(device):
            data, scale = data.to(device, non_blocking=True), scale.to(device, non_blocking=True)
        if data.device.type == "cpu":
            # a 256-entry table lookup: about 5x faster than torch's float8 conversion on CPU, same values
            codes = data.view(torch.uint8).reshape(-1).to(torch.int32)
            out = decode_table(dtype, data.device).index_select(0, codes).view(data.shape)
        else:
            out = data.to(dtype)
        return out.mul_(scale.to(dtype))

    def gather(self, index: torch.Tensor) -> "Fp8Rows":
        """The rows ``index`` (B, K) only."""
        return Fp8Rows(gather_tokens(self.data.view(torch.uint8), index).view(FP8), gather_tokens(self.scale, index))

    def map(self, fn) -> "Fp8Rows":
        """The same factor with ``fn`` applied to both tensors (e.g. a device move)."""
        return Fp8Rows(fn(self.data), fn(self.scale))

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.scale.numel() * self.scale.element_size()
