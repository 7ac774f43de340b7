"""How many bytes the cache of one run holds, from the model's geometry alone (no model, no tensors).

What is kept per conditioning slot (see :mod:`.slots`, :mod:`.taylor`, :mod:`.plan`):

- every cached branch of every block: ``order + 1`` Taylor factors of (rows, tokens, hidden) once enough full
  steps were seen (the peak), each in the cache dtype; the compact storages (``compact.COMPACT``) add one float32
  scale per token row of each factor;
- every clustered stream: int64 labels (rows, tokens) and float32 centroids (rows, min(K, tokens), hidden);
  a joint stream made of clustered streams (FLUX's single blocks) keeps its own int64 labels only;
- lite memory mode: the Taylor factors of the block stack's output only, and no clusters.

:func:`cache_bytes` adds these up; it matches the ``peak_cache_bytes`` a run reports (tested on tiny models).
"""

from __future__ import annotations

from dataclasses import dataclass

from .compact import COMPACT

#: bytes per element of a factor in a dense cache dtype (the compact ones: ``compact.COMPACT``)
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
LABEL_BYTES = 8        # int64 cluster labels
CENTROID_BYTES = 4     # float32 centroids


@dataclass(frozen=True)
class CachedStream:
    """One residual stream of a block kind: its tokens and how many of its branches are cached."""
    tokens: int
    branches: int


@dataclass(frozen=True)
class BlockGroup:
    """``blocks`` blocks of one kind, each caching ``streams``."""
    blocks: int
    streams: tuple


@dataclass(frozen=True)
class ModelGeometry:
    """What the cache size depends on. ``clustered``: token counts of the streams K-means clusters (per
    segment: a stream clustered per frame lists each frame); ``joined``: token counts of streams that only
    combine other streams' labels; ``lite_tokens``: tokens of the block stack's output (lite mode)."""
    name: str
    hidden: int
    groups: tuple
    clustered: tuple = ()
    joined: tuple = ()
    lite_tokens: int = 0

    @property
    def branch_token_rows(self) -> int:
        """Cached (token, branch) rows of one factor over all blocks, per batch row."""
        return sum(g.blocks * sum(s.tokens * s.branches for s in g.streams) for g in self.groups)


def factors_kept(order: int, full_steps: int | None = None) -> int:
    """Taylor factors per branch: ``order + 1`` at the peak (after ``order + 1`` full steps), fewer before."""
    if full_steps is None:
        return order + 1
    return max(0, min(order + 1, full_steps))


def factor_bytes(token_rows: int, hidden: int, dtype: str) -> int:
    """Bytes of ``token_rows`` rows of one factor in the dense ``dtype``."""
    if dtype not in ELEMENT_BYTES:
        raise ValueError(f"unknown cache dtype {dtype!r}; one of {', '.join((*ELEMENT_BYTES, *COMPACT))}")
    return token_rows * hidden * ELEMENT_BYTES[dtype]


def stack_bytes(token_rows: int, hidden: int, factors: int, dtype: str, value_dtype: str = "bf16") -> int:
    """Bytes of ``factors`` Taylor factors of ``token_rows`` rows; a compact ``dtype`` keeps the first (order 0)
    and the others in its codes (``compact.COMPACT``; no code, as ``fp8-diff``'s first: ``value_dtype``, the
    model's dtype), each as the code stores it."""
    if dtype not in COMPACT:
        return factors * factor_bytes(token_rows, hidden, dtype)
    first = min(factors, 1)
    zero, diff = COMPACT[dtype]
    zero_bytes = factor_bytes(token_rows, hidden, value_dtype) if zero is None else zero.stored_bytes(token_rows,
                                                                                                       hidden)
    return first * zero_bytes + (factors - first) * diff.stored_bytes(token_rows, hidden)


def cache_bytes(geom: ModelGeometry, order: int = 1, dtype: str = "bf16", memory_mode: str = "full",
                clusters: int = 16, conditionings: int = 1, rows: int = 1, full_steps: int | None = None,
                value_dtype: str = "bf16") -> dict:
    """The cache of one run, in bytes: ``{"factors", "clusters", "total"}``.

    ``conditionings`` = slots (2 with CFG), ``rows`` = batch rows per slot, ``clusters`` = K (0: none);
    ``value_dtype`` = the model's dtype (the order-0 factor of ``fp8-diff``)."""
    n = factors_kept(order, full_steps)
    if memory_mode == "lite":
        factors = stack_bytes(geom.lite_tokens, geom.hidden, n, dtype, value_dtype)
        cluster = 0
    elif memory_mode == "full":
        factors = stack_bytes(geom.branch_token_rows, geom.hidden, n, dtype, value_dtype)
        cluster = 0
        if clusters > 0 and (full_steps is None or full_steps > 0):
            cluster = sum(t * LABEL_BYTES + min(clusters, t) * geom.hidden * CENTROID_BYTES for t in geom.clustered)
            cluster += sum(t * LABEL_BYTES for t in geom.joined)
    else:
        raise ValueError(f"unknown memory_mode {memory_mode!r}")
    scale = conditionings * rows
    return {"factors": factors * scale, "clusters": cluster * scale, "total": (factors + cluster) * scale}
