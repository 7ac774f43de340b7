"""Tiny class-conditional DiT models built with the pack's own DiT (``nodes/dit``), for tests and benchmarks.

The pack is loaded through ComfyUI's node loader first, so the classes used here are the very ones the
adapter probes for. Weights are filled under a fixed seed (``comfy.ops`` leaves them uninitialised).
"""

from __future__ import annotations

import torch

from .comfy_env import load_pack, pack_module
from .tiny_models import CPU, init_weights

load_pack()

import comfy.model_patcher  # noqa: E402


def dit_unet_config(hidden=64, depth=3, heads=4, patch=2, input_size=16, num_classes=1000, learn_sigma=True,
                    mlp_ratio=4.0) -> dict:
    config = pack_module("nodes.dit.config")
    return config.make_unet_config(input_size=input_size, patch_size=patch, in_channels=4, hidden_size=hidden,
                                   depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                                   learn_sigma=learn_sigma)


def tiny_dit(seed=0, dtype=torch.float32, **kw) -> comfy.model_patcher.ModelPatcher:
    """A DiT of the given size (default: hidden 64, depth 3, 4 heads, patch 2, 16x16 latent) as a MODEL."""
    config = pack_module("nodes.dit.config")
    mc = config.DiTModelConfig(dit_unet_config(**kw))
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def dit_cond(label: int) -> list:
    """The CONDITIONING of one class label (the class-label node's positive output)."""
    return pack_module("nodes.dit.labels").label_conditioning(label)


def null_cond() -> list:
    """The null class (the class-label node's negative output)."""
    labels = pack_module("nodes.dit.labels")
    return labels.label_conditioning(labels.NULL_CLASS)


def official_state_dict(model) -> dict:
    """The weights of a DiT MODEL (or its diffusion model) in the official checkpoint key layout."""
    dm = getattr(getattr(model, "model", model), "diffusion_model", model)
    return {k: v.detach().clone().contiguous() for k, v in dm.state_dict().items()}
