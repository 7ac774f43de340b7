"""Qwen-Image (``comfy.ldm.qwen_image.model.QwenImageTransformer2DModel``): Qwen-Image, 2512, Edit 2509 / 2511
and Layered are one class, told apart by config fields only.

Its ``QwenImageTransformerBlock`` has FLUX's double-block shape: per stream ``x + gate1 * attn`` then
``x + gate2 * mlp(norm2(x) * (1 + scale2) + shift2)``, modulation from the block's ``img_mod`` / ``txt_mod``
(SiLU + Linear to 6 x dim), one joint attention whose image and text outputs are ``attn.to_out[0]`` (then an
inference-time no-op dropout) and ``attn.to_add_out``. Edit references are appended after the target image
tokens (of every layer, for Layered) and cached, clustered and refreshed with them. With the
``index_timestep_zero`` reference method (Edit 2511's default) the model doubles the timestep embedding and
modulates the reference tokens with its timestep-zero half: the image stream's modulation is then per token.
A ControlNet's (or a model patch's) residuals are added to the image tokens between blocks, outside them.
"""

from __future__ import annotations

import math

import torch

from ..adapters.spec import BlockKind, Branch, CallTokens, Family, Mod, Stream, TokenMlp, per_token


def _mods(params: torch.Tensor) -> tuple:
    """(attention Mod, MLP Mod) from a modulation Linear's output (B, 6 * dim)."""
    out = []
    for half in params.unsqueeze(1).chunk(2, dim=-1):
        shift, scale, gate = half.chunk(3, dim=-1)
        out.append(Mod(shift, scale, gate))
    return tuple(out)


def modulation(block, args: dict, extras: dict) -> dict:
    vec, img = args["vec"], args["img"]
    batch = img.shape[0]
    img_attn, img_mlp = _mods(block.img_mod(vec))
    # index_timestep_zero: temb holds the sampled timestep's rows then the timestep-zero rows; the text stream
    # takes the first half, the image stream's reference tokens (after the target tokens) the second
    split = vec.shape[0] == 2 * batch
    txt_attn, txt_mlp = _mods(block.txt_mod(vec[:batch] if split else vec))
    if split:
        zero_from = extras["timestep_zero_index"]
        token_index = (torch.arange(img.shape[1], device=img.device) >= zero_from).long()
        img_attn, img_mlp = (per_token([Mod(m.shift[:batch], m.scale[:batch], m.gate[:batch]),
                                        Mod(m.shift[batch:], m.scale[batch:], m.gate[batch:])], token_index)
                             for m in (img_attn, img_mlp))
    return {"img_attn": img_attn, "img_mlp": img_mlp, "txt_attn": txt_attn, "txt_mlp": txt_mlp}


def _grid(latent, patch: int) -> tuple:
    """(frames, rows, columns) of the tokens of a (B, C, T, H, W) latent (padded to the patch size)."""
    return (latent.shape[-3] if latent.ndim == 5 else 1, math.ceil(latent.shape[-2] / patch),
            math.ceil(latent.shape[-1] / patch))


def tokens(dm, bound: dict, config):
    x, context = bound.get("x"), bound.get("context")
    if x is None or context is None or x.ndim not in (4, 5) or context.ndim != 3:
        return "unexpected input layout"
    refs = bound.get("ref_latents") or []
    grid = _grid(x, dm.patch_size)
    n_ref = sum(math.prod(_grid(r, dm.patch_size)) for r in refs)
    return CallTokens(batch=x.shape[0], grid=grid, text=context.shape[1], reference=n_ref,
                      extras={"timestep_zero_index": math.prod(grid)},
                      fingerprint=tuple(tuple(r.shape[1:]) for r in refs))


def _stream(name: str, attn_out: str) -> Stream:
    return Stream(name, (Branch("attn", attn_out, f"{name}_attn"),
                         Branch("mlp", f"{name}_mlp", f"{name}_mlp", TokenMlp(f"{name}_norm2", f"{name}_mlp"))),
                  clusters=name)


QWEN_IMAGE = Family(
    key="qwen_image", name="Qwen-Image", model_class="comfy.ldm.qwen_image.model:QwenImageTransformer2DModel",
    block_kinds=(BlockKind(key="double_block", blocks="transformer_blocks",
                           streams=(_stream("img", "attn.to_out.0"), _stream("txt", "attn.to_add_out")),
                           modulation=modulation, modulation_modules=("img_mod", "txt_mod"), clusters=True),),
    tokens=tokens,
    notes="Qwen-Image, 2512, Edit 2509 / 2511 (references cached; index_timestep_zero modulated per token), "
          "Layered; ControlNet residuals keep working")
