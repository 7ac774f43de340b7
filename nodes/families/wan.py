"""Wan 2.1 / 2.2 (``comfy.ldm.wan``): T2V, I2V, FLF2V, Fun-Control, TI2V-5B and the 2.2 A14B experts (one class,
``WanModel``), VACE, Camera and Animate, all on ``WanAttentionBlock`` under the ``double_block`` patch key.

One stream of video tokens per block: ``x + gate * self_attn(norm1(x) * (1 + scale) + shift)``, then the
ungated ``x + cross_attn(norm3(x), context)`` (text, plus CLIP-vision tokens for I2V / FLF2V), then
``x + gate * ffn(norm2(x) * (1 + scale) + shift)``; the six modulations are the block's ``modulation`` parameter
plus the patch's ``vec`` (e0). All three branches are forecast on cached steps; the FFN is refreshed on one
token per cluster (and is the error probe). Wan 2.2 TI2V gives each latent frame its own timestep (``e`` of
(B, frames, 6, D)): the modulation is then per token, expanded the way the block does it (``repeat_e``), so the
kept first frame is cached and refreshed with its own modulation. I2V conditioning enters through the input
channels; reference tokens that enter the token stream (``reference_latent`` before the video, Phantom-style
``time_dim_concat`` frames and in-context ``context_latents`` after it) are cached and clustered with the video
tokens, as their own segment when clustering per frame. VACE's hint blocks and Animate's face adapter are
called by the model itself, not through a patch point: they run on every step.
"""

from __future__ import annotations

import math

from ..adapters.spec import BlockKind, Branch, CallTokens, Family, Mod, Stream, TokenMlp


def modulation(block, args: dict, extras: dict) -> dict:
    """The block's six modulations on this call, exactly as ``WanAttentionBlock.forward`` builds them."""
    import comfy.model_management
    from comfy.ldm.wan.model import repeat_e
    x, e = args["img"], args["vec"]
    m = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    parts = (m + e).chunk(6, dim=1) if e.ndim < 4 else (m.unsqueeze(0) + e).unbind(2)
    p = [repeat_e(t, x) for t in parts]          # (B, 1, D), or (B, N, D) with per-frame timesteps
    return {"self": Mod(p[0], p[1], p[2]), "ffn": Mod(p[3], p[4], p[5])}


def _grid(latent, patch) -> tuple:
    """(frames, rows, columns) of tokens of a (B, C, T, H, W) latent (padded to the patch size)."""
    return tuple(math.ceil(d / q) for d, q in zip(latent.shape[2:], patch))


def tokens(dm, bound: dict, config):
    x, context = bound.get("x"), bound.get("context")
    patch = tuple(dm.patch_size)
    if x is None or context is None or x.ndim != 5 or context.ndim != 3:
        return "unexpected input layout"
    before, after, shapes = 0, 0, []
    ref = bound.get("reference_latent")
    if ref is not None and getattr(dm, "ref_conv", None) is not None:      # (B, C, H, W), one frame first
        before = math.prod(math.ceil(d / q) for d, q in zip(ref.shape[-2:], patch[1:]))
        shapes.append(tuple(ref.shape[1:]))
    extra = bound.get("time_dim_concat")
    for lat in ([extra] if extra is not None else []) + list(bound.get("context_latents") or []):
        after += math.prod(_grid(lat, patch))                                # frames appended after the video
        shapes.append(tuple(lat.shape[1:]))
    if before and after:
        return "reference tokens both before and after the video tokens are computed in full"
    return CallTokens(batch=x.shape[0], grid=_grid(x, patch), reference=before or after,
                      reference_first=bool(before), fingerprint=tuple(shapes))


BLOCK = BlockKind(
    key="double_block", blocks="blocks",
    streams=(Stream("img", (Branch("self", "self_attn", "self"),
                            Branch("cross", "cross_attn"),
                            Branch("ffn", "ffn", "ffn", TokenMlp("norm2", "ffn"))), clusters="img"),),
    modulation=modulation, clusters=True)


def _wan(key: str, name: str, model_class: str, notes: str) -> Family:
    return Family(key=key, name=name, model_class=model_class, block_kinds=(BLOCK,), tokens=tokens, notes=notes)


WAN = _wan("wan", "Wan", "comfy.ldm.wan.model:WanModel",
           "2.1 T2V / I2V / FLF2V / Fun-Control, 2.2 A14B experts and TI2V-5B (per-frame timesteps cached)")
WAN_VACE = _wan("wan_vace", "Wan VACE", "comfy.ldm.wan.model:VaceWanModel",
                "the VACE hint blocks run on every step (the model calls them directly)")
WAN_CAMERA = _wan("wan_camera", "Wan Camera", "comfy.ldm.wan.model:CameraWanModel", "2.1 / 2.2 camera control")
WAN_ANIMATE = _wan("wan_animate", "Wan Animate", "comfy.ldm.wan.model_animate:AnimateWanModel",
                   "the face adapter runs on every step (the model calls it directly)")
