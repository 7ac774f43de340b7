"""Tiny seeded Lumina 2 / Z-Image models (ComfyUI's ``NextDiT``) from ComfyUI's own config classes, conditionings
and latents.

- ``z_image``: ``supported_models.ZImage`` with Z-Image's own settings (z_image_modulation, time scale 1000, RoPE
  theta 256, axes 32/48/48, caption and image padded to multiples of 32, FFN 8/3). Its timestep modulation input
  is 256 wide, so the hidden size is 256 (2 heads of 128).
- ``lumina2``: ``supported_models.Lumina2`` with Lumina 2's (SiLU modulation, grouped-query attention 4/2 heads).
- ``z_image_pixel`` (ComfyUI 0.33+): ``supported_models.ZImagePixelSpace``, the Z-Image blocks on RGB patches with
  the small MLP decoder.

``devkit.tiny_models.init_weights`` leaves 1-D weights at std 0.02; this model's norm weights (RMSNorm) scale every
branch, so they are set around 1 (``1 + 0.1 * N(0, 1)``), which keeps the blocks far from linear.
"""

from __future__ import annotations

import torch

from .tiny_models import CPU, init_weights

import comfy.model_patcher  # noqa: E402  (after tiny_models bootstrapped ComfyUI)
import comfy.supported_models  # noqa: E402

CAP_DIM = 64
VARIANTS = ("z_image", "lumina2", "z_image_pixel")


def lumina_config(variant: str = "z_image", layers: int = 2, refiners: int = 1, **extra) -> dict:
    """``extra``: further NextDiT fields (e.g. ``clip_text_dim`` for NewBie's pooled CLIP text, ComfyUI 0.33)."""
    common = dict(image_model="lumina2", patch_size=2, in_channels=16, cap_feat_dim=CAP_DIM, n_layers=layers,
                  n_refiner_layers=refiners, qk_norm=True, **extra)
    if variant == "lumina2":
        return dict(common, dim=64, n_heads=4, n_kv_heads=2, axes_dims=[4, 6, 6], axes_lens=[300, 512, 512],
                    rope_theta=10000.0, ffn_dim_multiplier=4.0)
    z = dict(common, dim=256, n_heads=2, n_kv_heads=2, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512],
             rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
             pad_tokens_multiple=32)
    if variant == "z_image":
        return z
    if variant == "z_image_pixel":
        return dict(z, image_model="zimage_pixel", patch_size=4, in_channels=3, decoder_in_channels=4 * 4 * 3,
                    decoder_hidden_size=32, decoder_num_res_blocks=1, decoder_max_freqs=4)
    raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")


def supported(variant: str) -> bool:
    """Whether this ComfyUI version has the variant's model class (the pixel-space one is new in 0.33)."""
    return variant != "z_image_pixel" or hasattr(comfy.supported_models, "ZImagePixelSpace")


def tiny_lumina(seed: int = 0, variant: str = "z_image", dtype=torch.float32, compute_dtype=None,
                **kw) -> comfy.model_patcher.ModelPatcher:
    """``dtype``: the weights' storage; ``compute_dtype``: ComfyUI's manual cast (e.g. fp8 weights, fp32 math:
    the same seeded weights, stored as ``dtype``)."""
    cls = getattr(comfy.supported_models, {"z_image": "ZImage", "lumina2": "Lumina2",
                                           "z_image_pixel": "ZImagePixelSpace"}[variant])
    mc = cls(lumina_config(variant, **kw))
    mc.set_inference_dtype(dtype if compute_dtype is None else torch.float32, None)
    base = mc.get_model({}, device=CPU)
    dm = base.diffusion_model
    init_weights(dm, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in dm.modules():
            w = getattr(module, "weight", None)
            if "Norm" in type(module).__name__ and isinstance(w, torch.Tensor) and w.ndim == 1:
                w.copy_((1 + 0.1 * torch.randn(w.shape, generator=g)).to(w.dtype))
    if compute_dtype is not None:
        mc = cls(lumina_config(variant, **kw))
        mc.set_inference_dtype(dtype, compute_dtype)
        stored = mc.get_model({}, device=CPU)
        stored.diffusion_model.load_state_dict(dm.state_dict())
        base = stored
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def lumina_cond(seed: int, tokens: int = 8, batch: int = 1, masked: int = 0, reference=None, pooled: int = 0) -> list:
    """A caption embedding (batch, tokens, 64); ``masked`` trailing tokens marked as padding in an attention mask
    (as ComfyUI's text encoders return it); ``reference``: Z-Image Omni reference latents; ``pooled``: the width
    of a pooled CLIP text embedding (NewBie)."""
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if pooled:
        extra["pooled_output"] = torch.randn(batch, pooled, generator=g)
    if masked:
        mask = torch.ones(batch, tokens, dtype=torch.long)
        mask[:, tokens - masked:] = 0
        extra["attention_mask"] = mask
    if reference is not None:
        extra["reference_latents"] = list(reference)
    return [[torch.randn(batch, tokens, CAP_DIM, generator=g), extra]]


def lumina_latent(variant: str = "z_image", batch: int = 1, size=(16, 20)) -> torch.Tensor:
    """An empty latent; the default 16 x 20 gives 8 x 10 = 80 image tokens (Z-Image pads them to 96)."""
    channels = 3 if variant == "z_image_pixel" else 16
    h, w = size
    if variant == "z_image_pixel":
        h, w = 2 * h, 2 * w          # patch 4 on pixels: the same token grid
    return torch.zeros(batch, channels, h, w)
