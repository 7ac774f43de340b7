"""Describing one model call for the wrappers (``Adapter.describe_call``): token counts, the cache fingerprint,
clustering segments, the cost estimate and the geometry shown in the summary, from the family's ``tokens``."""

from __future__ import annotations

from .base import CallInfo
from .cost import kind_flops
from .spec import CallTokens

def describe_call(adapter, diffusion_model, bound: dict, config) -> "CallInfo | str":
    tokens = adapter.spec.tokens(diffusion_model, bound, config)
    if isinstance(tokens, str):
        return tokens
    assert isinstance(tokens, CallTokens)
    frames, rows, cols = tokens.grid
    n_img = frames * rows * cols
    n_ref, n_txt = tokens.reference, tokens.text
    # the family's own clustering parts (e.g. the caption and image tokens of one joint stream), or per frame
    segments = tokens.extras.get("segments")
    if segments is None and config.cluster_per_frame and frames > 1:
        ref = [n_ref] if n_ref else []
        segments = (ref if tokens.reference_first else []) + [rows * cols] * frames + \
                   ([] if tokens.reference_first else ref)
    k = config.clusters
    k_img = sum(min(k, s) for s in segments) if segments else min(k, n_img + n_ref)
    full, cached = _cost(adapter, diffusion_model, n_img + n_ref, n_txt, k_img, min(k, n_txt))
    counts = [adapter.block_count(diffusion_model, kind) for kind in adapter.block_kinds]
    geometry = {"blocks": "+".join(str(c) for c in counts) if len(counts) > 1 else counts[0]}
    x = bound.get("x")
    if x is not None and x.ndim == 5:
        geometry["frames"] = frames
    geometry["image tokens"] = n_img
    if n_txt:
        geometry["text tokens"] = n_txt
    if n_ref:
        geometry["reference tokens"] = n_ref
    fingerprint = (tuple(x.shape[1:]) if x is not None else None, n_img, n_txt, n_ref, tokens.fingerprint,
                   getattr(x, "dtype", None), str(getattr(x, "device", "")))
    extras = {"segments": segments, "image_token_offset": n_ref if tokens.reference_first else 0}
    extras.update(tokens.extras)
    return CallInfo(batch=tokens.batch, fingerprint=fingerprint, geometry=geometry, full_flops=full,
                    cached_flops=cached, grid=tuple(tokens.grid), extras=extras)


def _cost(adapter, diffusion_model, n_img: int, n_txt: int, k_img: int, k_txt: int) -> tuple[float, float]:
    """Estimated FLOPs per batch row of one full and one cached evaluation (a walk over one block per kind)."""
    tokens = {"img": n_img, "txt": n_txt, "joint": n_img + n_txt}
    reps = {"img": k_img, "txt": k_txt, "joint": k_img + k_txt}
    full = cached = 0.0
    for kind in adapter.spec.block_kinds:
        blocks = adapter.blocks(diffusion_model, kind.key)
        if blocks:
            f, c = kind_flops(blocks[0], kind, tokens, reps, len(blocks))
            full, cached = full + f, cached + c
    return full, cached
