"""The FLUX-style blocks of ``comfy.ldm.flux.layers`` (``DoubleStreamBlock`` / ``SingleStreamBlock``), shared
by FLUX.1, FLUX.2 / Klein, Chroma (Radiance), Ovis-Image / LongCat-Image and HunyuanVideo.

Double blocks: an image and a text stream, each ``x + gate1 * attn.proj(joint attention)`` then
``x + gate2 * mlp(norm2(x) * (1 + scale2) + shift2)``; the last one's output is clustered (the paper).
Single blocks: one parallel branch on the joint text + image sequence, ``x + gate * linear2(cat(attn, mlp))``.
Modulation comes from the block's own ``img_mod`` / ``txt_mod`` / ``modulation`` (FLUX.1, HunyuanVideo) or, for
blocks built without it (FLUX.2's global modulation, Chroma's approximator), ready-made in the patch's ``vec``.
"""

from __future__ import annotations

import math

import torch

from ..adapters.spec import BlockKind, Branch, CallTokens, Mod, ParallelSplit, Stream, TokenMlp, as_mod


def double_modulation(block, args: dict, extras: dict) -> dict:
    vec = args["vec"]
    if getattr(block, "modulation", True):
        (img1, img2), (txt1, txt2) = block.img_mod(vec), block.txt_mod(vec)
    else:
        (img1, img2), (txt1, txt2) = vec
    return {"img_attn": as_mod(img1), "img_mlp": as_mod(img2), "txt_attn": as_mod(txt1), "txt_mlp": as_mod(txt2)}


def single_modulation(block, args: dict, extras: dict) -> dict:
    vec = args["vec"]
    mod = block.modulation(vec)[0] if getattr(block, "modulation", None) is not None else vec
    return {"mod": as_mod(mod)}


def _stream(name: str) -> Stream:
    return Stream(name, (Branch("attn", f"{name}_attn.proj", f"{name}_attn"),
                         Branch("mlp", f"{name}_mlp", f"{name}_mlp", TokenMlp(f"{name}_norm2", f"{name}_mlp"))),
                  clusters=name)


def _mlp_projection(block, act):
    """linear2's output for an MLP activation alone (the attention inputs zeroed; the bias included)."""
    zeros = act.new_zeros(*act.shape[:-1], block.hidden_size)
    return block.linear2(torch.cat((zeros, act), dim=-1))


def _single_mlp_part(block, projection_input):
    """The MLP part of a single block's output, from linear2's captured input ``cat(attn, mlp_act)``."""
    return _mlp_projection(block, projection_input[..., block.hidden_size:])


def _single_mlp(block, mod: Mod, x):
    """The MLP part of a single block for the tokens ``x``: its own pre_norm, modulation, linear1, activation
    and linear2."""
    h = block.linear1(mod.modulate(block.pre_norm(x)))
    return _mlp_projection(block, block.mlp_act(h[..., 3 * block.hidden_size:]))


DOUBLE = BlockKind(
    key="double_block", blocks="double_blocks", streams=(_stream("img"), _stream("txt")),
    modulation=double_modulation, modulation_modules=("img_mod", "txt_mod"), clusters=True)

SINGLE = BlockKind(
    key="single_block", blocks="single_blocks",
    streams=(Stream("img", (Branch("total", "linear2", "mod"),), clusters="joint"),),
    modulation=single_modulation, modulation_modules=("modulation",), joint=("txt", "img"),
    # refresh_scope="all": the MLP half of the parallel single blocks refreshed too (not with the yak MLP of
    # Ovis / LongCat, whose activation needs both halves of linear1's MLP part)
    split=ParallelSplit(mlp_part=_single_mlp_part, mlp=_single_mlp,
                        supported=lambda block: not getattr(block, "yak_mlp", False)))


def patch_grid(x, patch: int) -> tuple:
    """(1, rows, columns) of the tokens of a (B, C, H, W) latent cut into ``patch`` x ``patch`` patches (the
    latent is padded to the patch size first)."""
    return (1, math.ceil(x.shape[-2] / patch), math.ceil(x.shape[-1] / patch))


def image_tokens(dm, bound: dict, config, text_key: str = "context"):
    """CallTokens of a FLUX-style call: image tokens from the latent, text from the context, and reference
    latents (Kontext, FLUX.2 edit) appended after the target tokens. References with their own timestep
    (``index_timestep_zero``, the model's default method or the call's) modulate tokens differently: such
    calls run in full."""
    x, context = bound.get("x"), bound.get(text_key)
    if x is None or context is None or x.ndim != 4 or context.ndim != 3:
        return "unexpected input layout"
    refs = bound.get("ref_latents") or []
    params = getattr(dm, "params", None)
    method = bound.get("ref_latents_method") or getattr(params, "default_ref_method", "offset")
    if bound.get("timestep_zero_index") is not None or (refs and method == "index_timestep_zero"):
        return "reference latents with their own timestep (index_timestep_zero) are computed in full"
    patch = dm.patch_size
    n_ref = 0
    for r in refs:
        _, rows, cols = patch_grid(r, patch)
        n_ref += rows * cols
    return CallTokens(batch=x.shape[0], grid=patch_grid(x, patch), text=context.shape[1], reference=n_ref,
                      fingerprint=tuple(tuple(r.shape[1:]) for r in refs))
