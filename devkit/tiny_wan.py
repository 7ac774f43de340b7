"""Tiny seeded Wan models (2.1 T2V / I2V, 2.2 TI2V-5B, VACE, Camera, Animate) from ComfyUI's own config classes
(``comfy.supported_models``), their conditionings as ComfyUI's Wan nodes build them, and a KSampler(Advanced)-
style sampling helper with noise masks and start / end steps. Hidden 64, 4 heads, 2 blocks by default.
"""

from __future__ import annotations

import torch

from .tiny_models import CPU, init_weights

import comfy.model_patcher  # noqa: E402  (ComfyUI is bootstrapped by devkit.tiny_models)
import comfy.sample  # noqa: E402
import comfy.supported_models as sm  # noqa: E402

#: kind -> (ComfyUI config class, unet config fields beyond the common ones)
KINDS = {
    "t2v": (sm.WAN21_T2V, {}),
    "i2v": (sm.WAN21_I2V, {"model_type": "i2v", "in_dim": 36}),      # 16 latent + 4 mask + 16 image channels
    "ti2v": (sm.WAN22_T2V, {"in_dim": 48, "out_dim": 48}),           # Wan 2.2 TI2V-5B: 48-channel latent
    "vace": (sm.WAN21_Vace, {"model_type": "vace", "vace_layers": 1, "vace_in_dim": 96}),   # 32 + 64 mask
    "camera": (sm.WAN21_Camera, {"model_type": "camera", "in_dim": 32, "in_dim_control_adapter": 24}),
    "animate": (sm.WAN22_Animate, {"model_type": "animate", "in_dim": 36}),   # its motion encoder is full size
}
TEXT_DIM = 64
CLIP_DIM = 1280      # Wan's image projection takes CLIP-vision features of this width (fixed in the model)


def wan_config(kind="t2v", dim=64, heads=4, layers=2, ffn_dim=128, **kw) -> dict:
    cfg = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=dim,
               ffn_dim=ffn_dim, freq_dim=256, text_dim=TEXT_DIM, out_dim=16, num_heads=heads, num_layers=layers,
               window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
    cfg.update(KINDS[kind][1])
    cfg.update(kw)
    return cfg


def tiny_wan(kind="t2v", seed=0, dtype=torch.float32, **kw) -> comfy.model_patcher.ModelPatcher:
    """A Wan model of ``kind`` as a MODEL, weights from ``devkit.tiny_models.init_weights`` (unit-variance
    activations, so caching errors are measurable) with the norms' weights at 1."""
    model_cls = KINDS[kind][0]
    mc = model_cls(wan_config(kind, **kw))
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    dm = base.diffusion_model
    init_weights(dm, seed)
    with torch.no_grad():
        for name, p in dm.named_parameters():
            if p.ndim == 1 and name.endswith("weight") and "norm" in name:
                p.fill_(1.0)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def latent_channels(kind: str) -> int:
    return 48 if kind == "ti2v" else 16


class ClipVisionOutput:
    """What CLIPVisionEncode gives the Wan I2V conditioning (the model reads ``penultimate_hidden_states``)."""

    def __init__(self, tokens: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.penultimate_hidden_states = torch.randn(1, tokens, CLIP_DIM, generator=g)


def wan_cond(seed: int, tokens=8, batch=1, kind="t2v", frames=3, size=(8, 8), clip_tokens=4):
    """A conditioning as the Wan nodes build it: the text (``tokens`` x ``TEXT_DIM``); for I2V also an encoded
    start image, its mask and CLIP-vision tokens (WanImageToVideo); for VACE a control video and mask
    (WanVaceToVideo); camera embeddings (WanCameraImageToVideo); a pose video (WanAnimateToVideo)."""
    g = torch.Generator().manual_seed(seed)
    extra = {}
    h, w = size
    if kind == "i2v":
        image = torch.zeros(1, 16, frames, h, w)
        image[:, :, :1] = torch.randn(1, 16, 1, h, w, generator=g)
        mask = torch.ones(1, 1, frames, h, w)
        mask[:, :, :1] = 0.0
        extra.update(concat_latent_image=image, concat_mask=mask,
                     clip_vision_output=ClipVisionOutput(clip_tokens, seed + 100))
    elif kind == "vace":
        control = torch.randn(1, 32, frames, h, w, generator=g)
        extra.update(vace_frames=[control], vace_mask=[torch.ones(1, 64, frames, h, w)], vace_strength=[1.0])
    elif kind == "camera":
        extra.update(camera_conditions=torch.randn(1, 24, frames, h * 8, w * 8, generator=g))
    elif kind == "animate":      # WanAnimateToVideo's pose video (added to the frames after the first)
        extra.update(pose_video_latent=torch.randn(1, 16, frames - 1, h, w, generator=g))
    return [[torch.randn(batch, tokens, TEXT_DIM, generator=g), extra]]


def ti2v_latent(batch=1, frames=3, size=(8, 8), seed=5):
    """Wan22ImageToVideoLatent's output: a 48-channel latent whose first frame holds the encoded start image,
    and a noise mask that keeps it (one timestep per latent frame inside the model)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.zeros(batch, 48, frames, *size)
    latent[:, :, :1] = torch.randn(1, 48, 1, *size, generator=g)
    mask = torch.ones(batch, 1, frames, *size)
    mask[:, :, :1] = 0.0
    return latent, mask


def ksample(model, positive, negative, latent, steps=10, cfg=2.0, sampler="euler", scheduler="simple", seed=0,
            noise_mask=None, start_step=None, last_step=None, add_noise=True, force_full_denoise=False,
            callback=None):
    """Sample like ComfyUI's KSampler / KSamplerAdvanced (``nodes.common_ksampler``): start / end steps of one
    schedule, noise added or not, a latent noise mask. Returns the final latent (float32)."""
    noise = comfy.sample.prepare_noise(latent, seed) if add_noise else torch.zeros_like(latent)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                   disable_noise=not add_noise, start_step=start_step, last_step=last_step,
                                   force_full_denoise=force_full_denoise, noise_mask=noise_mask,
                                   callback=callback, disable_pbar=True, seed=seed)
