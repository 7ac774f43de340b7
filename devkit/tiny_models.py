"""Tiny models of the supported families, built through ComfyUI's own model classes, plus sampling helpers."""

from __future__ import annotations

import math

import torch

from .comfy_env import bootstrap

bootstrap()

import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402

CPU = torch.device("cpu")


def init_weights(module: torch.nn.Module, seed: int) -> None:
    """comfy.ops leaves weights uninitialised: fill them deterministically (unit-variance activations)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("scale") and p.ndim == 1:
                p.fill_(1.0)
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) / math.sqrt(fan_in))
            else:
                p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.02).to(p.dtype))


def flux_config(hidden=64, heads=4, depth=2, single=2, in_channels=16, guidance_embed=True, context_dim=64,
                vec_dim=32, mlp_ratio=4.0, axes_dim=None):
    head_dim = hidden // heads
    a = head_dim // 8 * 2              # two even spatial axes, the rest (also even) for the index axis
    axes = list(axes_dim) if axes_dim is not None else [head_dim - 2 * a, a, a]
    cfg = dict(image_model="flux", in_channels=in_channels, out_channels=16, vec_in_dim=vec_dim,
               context_in_dim=context_dim, hidden_size=hidden, mlp_ratio=mlp_ratio, num_heads=heads, depth=depth,
               depth_single_blocks=single, axes_dim=axes, theta=10000, patch_size=2, qkv_bias=True,
               guidance_embed=guidance_embed)
    return with_version_fields(cfg)


def tiny_flux(seed=0, dtype=torch.float32, **kw) -> comfy.model_patcher.ModelPatcher:
    cfg = flux_config(**kw)
    model_cls = comfy.supported_models.Flux if cfg["guidance_embed"] else comfy.supported_models.FluxSchnell
    mc = model_cls(cfg)
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def flux_cond(seed: int, tokens=8, context_dim=64, vec_dim=32, guidance=3.5, batch=1):
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, vec_dim, generator=g)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[torch.randn(batch, tokens, context_dim, generator=g), extra]]


def hunyuan_video_config(hidden=64, heads=4, depth=2, single=2, context_dim=64, vec_dim=32, patch=(1, 2, 2),
                         version="1.0"):
    head_dim = hidden // heads
    a = head_dim // 8 * 2
    axes = [head_dim - 2 * a, a, a] if len(patch) == 3 else [head_dim // 2, head_dim - head_dim // 2]
    cfg = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=vec_dim,
               context_in_dim=context_dim, hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth,
               depth_single_blocks=single, axes_dim=axes, theta=256, patch_size=list(patch),
               qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False)
    with_version_fields(cfg)
    if version == "1.5":   # byT5 glyph tokens, vision tokens, condition-type embedding, 32-ch latent + concat
        cfg.update(in_channels=65, out_channels=32, vec_in_dim=None, byt5=True, use_cond_type_embedding=True,
                   vision_in_dim=16, guidance_embed=False)
    return cfg


def with_version_fields(unet_config: dict) -> dict:
    """The config with the fields only some ComfyUI versions have (the pack's ``nodes.compat``)."""
    from .comfy_env import pack_module
    return pack_module("nodes.compat").with_version_fields(unet_config)


def tiny_hunyuan_video(seed=0, dtype=torch.float32, version="1.0", **kw) -> comfy.model_patcher.ModelPatcher:
    cfg = hunyuan_video_config(version=version, **kw)
    model_cls = comfy.supported_models.HunyuanVideo15 if version == "1.5" else comfy.supported_models.HunyuanVideo
    mc = model_cls(cfg)
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def hunyuan_video_cond(seed: int, tokens=8, context_dim=64, vec_dim=32, guidance=6.0, batch=1, mask=False):
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, vec_dim, generator=g), "guidance": guidance}
    if mask:
        m = torch.ones(batch, tokens, dtype=torch.long)
        m[:, tokens // 2:] = 0
        extra["attention_mask"] = m
    return [[torch.randn(batch, tokens, context_dim, generator=g), extra]]


def sample(model, positive, negative, steps=10, cfg=1.0, sampler="euler", scheduler="simple", height=16,
           width=16, batch=1, seed=0, channels=16, latent=None, denoise=1.0, sigmas=None, callback=None):
    """Sample like KSampler does; returns the final latent (float32)."""
    if latent is None:
        latent = torch.zeros(batch, channels, height, width)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        if sigmas is not None:
            sampler_obj = comfy.samplers.sampler_object(sampler)
            return comfy.sample.sample_custom(model, noise, cfg, sampler_obj, sigmas, positive, negative, latent,
                                              callback=callback, disable_pbar=True, seed=seed)
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                   denoise=denoise, callback=callback, disable_pbar=True, seed=seed)


class AttentionCounter:
    """Counts attention calls through ComfyUI's ``optimized_attention_override`` hook."""

    def __init__(self):
        self.calls = 0

    def __call__(self, func, *args, **kwargs):
        self.calls += 1
        return func(*args, **kwargs)

    def install(self, model):
        model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = self
        return model

