"""Only the modulation a cached step uses.

A cached step needs an attention branch's gate but not the shift and scale of its input (attention does not
run), and a block whose whole output is forecast needs only its gate. The modulation linears are large (FLUX.1-dev:
3072 x 18432 per stream and double block, 6.4 GB of bf16 weights over the model), so computing only the rows
of the chunks used saves that share of the weight reads of every cached step. Only plain weights are sliced; a
linear with weight patches applied on the fly, quantized or otherwise special weights runs in full and is
sliced afterwards (same values, no saving).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _plain(linear) -> bool:
    """Whether ``linear`` computes ``F.linear(x, weight, bias)`` with its own weights as they are."""
    if not isinstance(linear, torch.nn.Linear):
        return False
    if type(linear.weight) not in (torch.Tensor, torch.nn.Parameter) or linear.weight.is_meta:
        return False
    if linear.weight.dtype not in _FLOATS or getattr(linear, "scale_weight", None) is not None:
        return False        # fp8 / scaled weights: let the layer's own forward dequantize them
    if linear.bias is not None and type(linear.bias) not in (torch.Tensor, torch.nn.Parameter):
        return False
    return not getattr(linear, "weight_function", None) and not getattr(linear, "bias_function", None)


def modulation_chunks(linear, x: torch.Tensor, chunks: int, first: int, count: int) -> tuple:
    """``linear(x).chunk(chunks, -1)[first:first + count]``, computing only those output rows when the
    linear's weights are plain tensors."""
    out = linear.out_features
    if out % chunks:
        raise ValueError(f"{out} outputs do not split into {chunks} chunks")
    size = out // chunks
    if not _plain(linear):
        return linear(x).chunk(chunks, dim=-1)[first:first + count]
    rows = slice(first * size, (first + count) * size)
    w = linear.weight[rows].to(device=x.device, dtype=x.dtype)
    b = None if linear.bias is None else linear.bias[rows].to(device=x.device, dtype=x.dtype)
    return F.linear(x, w, b).chunk(count, dim=-1)
