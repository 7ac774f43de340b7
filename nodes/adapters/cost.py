"""Estimated multiply-add FLOPs of a model call, full and cached, from what the blocks hold.

Counted per block kind from one block's linear layers (every block of a kind has the same shape): a linear
layer costs ``2 * in * out`` per token it sees. Modulation layers see one token per batch row; the other
layers see their stream's tokens (a double-stream block's layers are split evenly between its two streams);
self-attention costs ``4 * N^2 * d`` over the ``N`` tokens that attend together. A cached block runs the
modulation layers and, for every refreshed MLP branch, that MLP on the representatives. Used for the run
summary's estimated speed-up (the schedule bound is exact; this estimate shows what a cached step costs).
"""

from __future__ import annotations

import torch

from .base import has_submodule, submodule


def _linear_params(module) -> int:
    total = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features
    return total


def _width(block, kind) -> int:
    for stream in kind.streams:
        for branch in stream.branches:
            module = submodule(block, branch.module)
            for m in module.modules():
                if isinstance(m, torch.nn.Linear):
                    return m.out_features
            shape = getattr(module, "normalized_shape", None)     # a post-normed branch (Lumina)
            if shape:
                return int(shape[-1])
    return 0


def kind_flops(block, kind, tokens: dict, reps: dict, count: int) -> tuple[float, float]:
    """(full, cached) FLOPs per batch row of ``count`` blocks of ``kind``; ``tokens`` / ``reps``: tokens and
    representatives per cluster stream ("img", "txt", "joint")."""
    # blocks built without their own modulation (FLUX.2, Chroma) get it ready-made: nothing to count here
    mod_params = sum(_linear_params(submodule(block, p)) for p in kind.modulation_modules if has_submodule(block, p))
    body = _linear_params(block) - mod_params
    seen = [tokens.get(s.clusters or s.name, tokens.get("img", 0)) for s in kind.streams]
    joint = sum(tokens.get(c, 0) for c in kind.joint) if kind.joint else sum(seen)
    if kind.joint:
        seen = [joint] * len(seen)      # its stream holds every token of the joint sequence
    full = 2 * body * sum(seen) / len(seen) + 4 * joint * joint * _width(block, kind) + 2 * mod_params
    cached = 2 * mod_params
    for stream in kind.streams:
        for branch in stream.branches:
            if branch.mlp is not None and stream.clusters is not None:
                cached += 2 * reps.get(stream.clusters, 0) * _linear_params(submodule(block, branch.mlp.mlp))
    return count * full, count * cached
