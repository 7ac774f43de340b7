"""Tiny seeded LTX models built through ComfyUI's own classes (``comfy.supported_models.LTXV``), conditionings
and an image-conditioned latent.

- ``tiny_ltxv``: LTX-Video 0.9.x layout (``LTXVModel``, ungated text cross-attention). 0.3.75 and 0.33.
- ``tiny_ltxv(ltx2=True)``: the LTX-2 video transformer's block layout (``cross_attention_adaln``: the text
  cross-attention modulated and gated per token). Only ComfyUI versions that have it (0.33); older ones
  ignore the option, see ``has_ltx2``.

LTXV's forward takes ``attention_mask`` positionally: every conditioning here carries one.
"""

from __future__ import annotations

import torch

from .tiny_models import CPU, init_weights

import comfy.model_patcher  # noqa: E402  (after bootstrap, done by tiny_models)
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402

CHANNELS = 16
CAPTION = 32


def has_ltx2() -> bool:
    """Whether this ComfyUI's LTX block has the LTX-2 cross-attention AdaLN."""
    import inspect
    import comfy.ldm.lightricks.model as ltx
    return "cross_attention_adaln" in inspect.signature(ltx.BasicTransformerBlock.__init__).parameters


def tiny_ltxv(seed: int = 0, dtype=torch.float32, ltx2: bool = False, layers: int = 2, hidden: int = 64,
              heads: int = 2) -> comfy.model_patcher.ModelPatcher:
    """A tiny LTXV (``hidden`` = heads x head size; patch size 1, ``CHANNELS`` latent channels)."""
    cfg = dict(image_model="ltxv", in_channels=CHANNELS, cross_attention_dim=hidden, attention_head_dim=hidden // heads,
               num_attention_heads=heads, caption_channels=CAPTION, num_layers=layers)
    if ltx2:
        cfg["cross_attention_adaln"] = True
    mc = comfy.supported_models.LTXV(cfg)
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def ltx_cond(seed: int, tokens: int = 8, batch: int = 1):
    """A text conditioning (``CAPTION`` features) with its attention mask (the model needs one)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, CAPTION, generator=g),
             {"attention_mask": torch.ones(batch, tokens, dtype=torch.long)}]]


def ltx_latent(batch: int = 1, frames: int = 3, height: int = 8, width: int = 8) -> torch.Tensor:
    return torch.zeros(batch, CHANNELS, frames, height, width)


def image_to_video(seed: int, batch: int = 1, frames: int = 3, height: int = 8, width: int = 8):
    """(latent, noise mask) as LTXVImgToVideo makes them: the first latent frame holds an encoded image and
    is kept (mask 0), the others are generated (mask 1). The sampler then gives the model one timestep per
    token (the first frame's tokens at timestep 0)."""
    g = torch.Generator().manual_seed(seed)
    latent = ltx_latent(batch, frames, height, width)
    latent[:, :, :1] = torch.randn(batch, CHANNELS, 1, height, width, generator=g)
    mask = torch.ones(batch, 1, frames, height, width)
    mask[:, :, :1] = 0.0
    return latent, mask


def sample_masked(model, positive, negative, latent, noise_mask, steps=10, cfg=2.0, sampler="euler",
                  scheduler="simple", seed=0, callback=None):
    """``devkit.tiny_models.sample`` with a noise mask (as KSampler passes a latent's ``noise_mask``)."""
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                   noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=seed)
