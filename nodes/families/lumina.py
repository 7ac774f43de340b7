"""Lumina 2 and Z-Image (Turbo and base: one architecture): ComfyUI's ``NextDiT`` (``comfy.ldm.lumina.model``), and
Z-Image's pixel-space variant (``NextDiTPixelSpace``, ComfyUI 0.33) on the same blocks.

One stream: the caption tokens (Z-Image pads them to a multiple of 32), then the image tokens (and their padding),
through ``layers`` of ``JointTransformerBlock``: ``x + tanh(gate_msa) * attention_norm2(attention(...))`` then
``x + tanh(gate_mlp) * ffn_norm2(feed_forward(ffn_norm1(x) * (1 + scale_mlp)))``, scales and gates from
``adaLN_modulation(adaln_input)``. The model calls its layers without a patch point, so they are reached through
object patches on their ``forward`` (``spec.ForwardPatch``). The last layer's output is clustered, the caption and
the image tokens apart (``clusters`` each, like the text and image streams of FLUX), so the image always gets its
own clusters whatever the caption's length; the refresh recomputes the feed-forward branch for one token per
cluster. The refiner layers before the main ones (noise refiner on the image, context refiner on the caption) run
in full on every step; Z-Image Omni calls with reference images (``ref_latents``: their tokens are modulated
with another timestep, token by token) run in full.
"""

from __future__ import annotations

import math

import torch

from ..adapters.spec import BlockKind, Branch, CallTokens, Family, ForwardPatch, Mod, Stream, TokenMlp

NEXTDIT = "comfy.ldm.lumina.model:NextDiT"


def modulation(block, args: dict, extras: dict) -> dict:
    if args.get("timestep_zero_index") is not None:     # per-token modulation: such calls run in full (tokens)
        raise ValueError("token-wise timestep modulation (timestep_zero_index)")
    scale_msa, gate_msa, scale_mlp, gate_mlp = block.adaLN_modulation(args["vec"]).chunk(4, dim=1)
    return {"msa": Mod(scale=scale_msa.unsqueeze(1), gate=gate_msa.unsqueeze(1).tanh()),
            "mlp": Mod(scale=scale_mlp.unsqueeze(1), gate=gate_mlp.unsqueeze(1).tanh())}


def tokens(dm, bound: dict, config):
    x, context = bound.get("x"), bound.get("context")
    if x is None or context is None or x.ndim != 4 or context.ndim != 3:
        return "unexpected input layout"
    if bound.get("ref_latents"):
        return "reference images (Z-Image Omni: modulated with their own timestep, token by token) are computed in full"
    p = dm.patch_size
    rows, cols = math.ceil(x.shape[-2] / p), math.ceil(x.shape[-1] / p)
    n_cap, n_img, n_pad = context.shape[1], rows * cols, 0
    multiple = getattr(dm, "pad_tokens_multiple", None)
    if multiple:
        n_cap += -n_cap % multiple
        n_pad = -n_img % multiple
    segments = [n for n in (n_cap, n_img + n_pad) if n > 0]
    return CallTokens(batch=x.shape[0], grid=(1, rows, cols), text=n_cap, fingerprint=(n_pad,),
                      extras={"segments": segments, "image_token_offset": n_cap})


LAYER = BlockKind(
    key="layer", blocks="layers",
    streams=(Stream("img", (Branch("attn", "attention_norm2", "msa"),
                            Branch("mlp", "ffn_norm2", "mlp", TokenMlp("ffn_norm1", "feed_forward", "ffn_norm2"))),
                    clusters="img"),),
    modulation=modulation, modulation_modules=("adaLN_modulation",), clusters=True, joint=("txt", "img"),
    forward_patch=ForwardPatch(rename=(("x", "img"), ("x_mask", "attn_mask"), ("freqs_cis", "pe"),
                                       ("adaln_input", "vec"))))


def _z_image(dm) -> bool:
    """Z-Image's layers take the 256-wide timestep embedding without a SiLU (``z_image_modulation``)."""
    layers = getattr(dm, "layers", None)
    mod = getattr(layers[0], "adaLN_modulation", None) if layers else None
    return mod is not None and not isinstance(mod[0], torch.nn.SiLU)


IN_FULL = "refiner layers every step; Z-Image Omni reference images run in full"

Z_IMAGE = Family(
    key="z_image", name="Z-Image", model_class=NEXTDIT, block_kinds=(LAYER,), tokens=tokens,
    refuse=lambda dm: None if _z_image(dm) else "not a Z-Image model", notes=f"Turbo and base; {IN_FULL}")

LUMINA2 = Family(
    key="lumina2", name="Lumina 2", model_class=NEXTDIT, block_kinds=(LAYER,), tokens=tokens,
    refuse=lambda dm: "a Z-Image model" if _z_image(dm) else None, notes=f"also NewBie; {IN_FULL}")

Z_IMAGE_PIXEL = Family(
    key="z_image_pixel", name="Z-Image (pixel space)", model_class="comfy.ldm.lumina.model:NextDiTPixelSpace",
    block_kinds=(LAYER,), tokens=tokens, notes=f"ComfyUI 0.33+; the pixel decoder runs every step; {IN_FULL}")
