"""Tiny seeded Qwen-Image models through ComfyUI's own classes (``comfy.supported_models.QwenImage``), with
conditionings, latents, edit references and a tiny InstantX-style ControlNet (``QwenImageControlNetModel``
wrapped in ComfyUI's ``comfy.controlnet.ControlNet``).

Variants (one model class, ``comfy.ldm.qwen_image.model.QwenImageTransformer2DModel``; ComfyUI's detection
tells them apart by config fields only):

- ``"base"``: Qwen-Image, 2512 and Edit 2509 (edit models take ``reference_latents``; their default reference
  method is ``index``).
- ``"edit_2511"``: ``default_ref_method="index_timestep_zero"`` (ComfyUI detects it from the
  ``__index_timestep_zero__`` key): reference tokens are modulated with the timestep-zero embedding.
- ``"layered"``: ``use_additional_t_cond=True`` and ``default_ref_method="negative_index"``; the latent has
  one frame per layer plus one.

ComfyUI 0.3.75 has neither the ``index_timestep_zero`` method nor the Layered fields, and its ``process_img``
handles one latent frame only: :func:`variant_support` says why a variant cannot be built on a tree.
"""

from __future__ import annotations

import inspect

import torch

from .tiny_models import CPU, init_weights

import comfy.controlnet  # noqa: E402  (ComfyUI is importable once devkit.tiny_models bootstrapped it)
import comfy.ldm.qwen_image.controlnet  # noqa: E402
import comfy.ldm.qwen_image.model  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.supported_models  # noqa: E402

VARIANTS = ("base", "edit_2511", "layered")
CHANNELS = 16


def _model_parameters() -> set:
    return set(inspect.signature(comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.__init__).parameters)


def variant_support(variant: str) -> str | None:
    """None when this ComfyUI tree can build ``variant``, else the reason it cannot."""
    params = _model_parameters()
    if variant == "edit_2511" and "default_ref_method" not in params:
        return "this ComfyUI has no index_timestep_zero reference method (QwenImageTransformer2DModel has no default_ref_method)"
    if variant == "layered" and "use_additional_t_cond" not in params:
        return "this ComfyUI has no Qwen-Image Layered (no use_additional_t_cond, one latent frame only)"
    return None


def qwen_image_config(hidden=64, heads=4, depth=2, context_dim=64, variant="base") -> dict:
    """A tiny ``unet_config`` as ComfyUI's model detection would produce it (plus the sizes it takes from the
    class defaults for the full model)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Qwen-Image variant {variant!r}")
    head_dim = hidden // heads
    rows = (3 * head_dim // 8) // 2 * 2     # rope axes: frame/reference index, rows, columns (each even)
    cfg = dict(image_model="qwen_image", patch_size=2, in_channels=CHANNELS * 4, out_channels=CHANNELS,
               num_layers=depth, attention_head_dim=head_dim, num_attention_heads=heads,
               joint_attention_dim=context_dim, axes_dims_rope=(head_dim - 2 * rows, rows, rows))
    if variant == "edit_2511":
        cfg["default_ref_method"] = "index_timestep_zero"
    elif variant == "layered":
        cfg.update(use_additional_t_cond=True, default_ref_method="negative_index")
    return cfg


def _init(module: torch.nn.Module, seed: int) -> None:
    """Unit-variance weights (``init_weights``), and RMSNorm weights at 1 as trained models have them near (at
    the 0.02 that init_weights gives vectors, the q/k norms would flatten attention to a uniform average)."""
    init_weights(module, seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if type(m).__name__ == "RMSNorm" and getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)


def tiny_qwen_image(seed=0, dtype=torch.float32, variant="base", **kw) -> comfy.model_patcher.ModelPatcher:
    reason = variant_support(variant)
    if reason:
        raise RuntimeError(reason)
    mc = comfy.supported_models.QwenImage(qwen_image_config(variant=variant, **kw))
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    _init(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def qwen_image_cond(seed: int, tokens=8, context_dim=64, batch=1, references=None, method=None):
    """A conditioning: text features (the Qwen2.5-VL encoder's output), optionally edit references (5-D
    latents, as the Wan VAE encodes them) and a reference method (``TextEncodeQwenImageEdit`` /
    ``ReferenceLatent`` set ``reference_latents``; a method node sets ``reference_latents_method``)."""
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if references:
        extra["reference_latents"] = list(references)
    if method is not None:
        extra["reference_latents_method"] = method
    return [[torch.randn(batch, tokens, context_dim, generator=g), extra]]


def qwen_image_latent(batch=1, height=16, width=16, frames=1) -> torch.Tensor:
    """An empty latent as the sampler sees it (ComfyUI adds the frame axis to a 4-D empty latent for the Wan
    latent format; Layered has one frame per layer plus one)."""
    return torch.zeros(batch, CHANNELS, frames, height, width)


def reference_latent(seed: int, height=8, width=8) -> torch.Tensor:
    return torch.randn(1, CHANNELS, 1, height, width, generator=torch.Generator().manual_seed(seed))


def tiny_qwen_controlnet(model: comfy.model_patcher.ModelPatcher, seed=7, depth=None) -> comfy.controlnet.ControlNet:
    """An InstantX-style Qwen-Image ControlNet (ComfyUI's ``QwenImageControlNetModel``, as
    ``load_controlnet_qwen_instantx`` builds it) for ``model``'s config, wrapped in ComfyUI's ``ControlNet``.
    Built without a latent format, so a latent-space hint is used as it is (no VAE)."""
    cfg = {k: v for k, v in model.model.model_config.unet_config.items() if k != "dtype"}
    if depth is not None:
        cfg["num_layers"] = depth
    dtype = model.model.diffusion_model.dtype
    control_model = comfy.ldm.qwen_image.controlnet.QwenImageControlNetModel(
        extra_condition_channels=0, operations=comfy.ops.disable_weight_init, device=CPU, dtype=dtype, **cfg)
    _init(control_model, seed)
    return comfy.controlnet.ControlNet(control_model, compression_ratio=1, latent_format=None, load_device=CPU,
                                       manual_cast_dtype=None, extra_conds=[])
