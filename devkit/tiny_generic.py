"""Tiny seeded models of families ClusCa has no description for, built through ComfyUI's own classes
(``comfy.supported_models``), for the generic block forecast's tests. Each ``GenericModel`` says how to build
the model, its conditionings and a latent, and how many attention calls one model evaluation makes.

In both trees (0.3.75 and 0.33) and routed through ``patches_replace["dit"]`` per block:

- SD3 (``mmdit.OpenAISignatureMMDITWrapper``): joint double blocks on image + text; the last one returns no
  text (``context_pre_only``). Its forward calls no DIFFUSION_MODEL wrapper.
- AuraFlow (``aura.mmdit.MMDiT``): double blocks (image + text), then single blocks on their concatenation.
- Hunyuan3D 2.0 (``hunyuan3d.model.Hunyuan3Dv2``): FLUX double and single blocks on a (B, C, N) shape latent.

And two that do not route through ClusCa's block patches: Hunyuan3D 2.1 (``hunyuan3dv2_1``, its ``("block",
i)`` patches get no ``transformer_options``) and Lumina 2 (``NextDiT``, no ``patches_replace["dit"]`` at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .tiny_models import CPU, init_weights

import comfy.model_patcher  # noqa: E402  (after bootstrap, done by tiny_models)
import comfy.supported_models as sm  # noqa: E402

TEXT = 32


def build(model_config_cls, unet_config: dict, seed: int = 0, dtype=torch.float32) -> comfy.model_patcher.ModelPatcher:
    mc = model_config_cls(unet_config)
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():       # position tables some models keep as (uninitialised) buffers
        for name, buf in base.diffusion_model.named_buffers():
            if name.endswith("pos_embed") and buf.is_floating_point():
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def text_cond(seed: int, tokens: int = 8, batch: int = 1, pooled: int = 0, mask: bool = False):
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if pooled:
        extra["pooled_output"] = torch.randn(batch, pooled, generator=g)
    if mask:
        extra["attention_mask"] = torch.ones(batch, tokens, dtype=torch.long)
    return [[torch.randn(batch, tokens, TEXT, generator=g), extra]]


@dataclass
class GenericModel:
    name: str                   # ComfyUI's model class (what the summary calls it)
    make: Callable              # (seed, dtype) -> ModelPatcher
    cond: Callable              # (seed, tokens) -> conditioning
    latent: Callable            # (batch, size) -> latent; size None = the default
    attention_per_call: int     # attention calls of one model evaluation (all in routed blocks)
    sizes: tuple                # two latent sizes (back-to-back runs)


SD3 = GenericModel(
    "SD3",
    lambda seed=0, dtype=torch.float32: build(sm.SD3, dict(
        in_channels=16, patch_size=2, depth=2, pos_embed_max_size=16, num_patches=256, adm_in_channels=TEXT,
        pos_embed_scaling_factor=None,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": TEXT, "out_features": 128}}),
        seed, dtype),
    lambda seed, tokens=8: text_cond(seed, tokens, pooled=TEXT),
    lambda batch=1, size=None: torch.zeros(batch, 16, *(size or (16, 16))),
    attention_per_call=2, sizes=((16, 16), (16, 24)))

AURAFLOW = GenericModel(
    "AuraFlow",
    lambda seed=0, dtype=torch.float32: build(sm.AuraFlow, dict(
        cond_seq_dim=TEXT, in_channels=4, out_channels=4, patch_size=2, dim=64, n_layers=3, n_double_layers=1,
        n_heads=2, global_conddim=64, max_seq=64), seed, dtype),
    lambda seed, tokens=8: text_cond(seed, tokens),
    lambda batch=1, size=None: torch.zeros(batch, 4, *(size or (16, 16))),
    attention_per_call=3, sizes=((16, 16), (16, 24)))

HUNYUAN3D = GenericModel(
    "Hunyuan3Dv2",
    lambda seed=0, dtype=torch.float32: build(sm.Hunyuan3Dv2, dict(
        image_model="hunyuan3d2", in_channels=16, context_in_dim=TEXT, hidden_size=64, mlp_ratio=4.0, num_heads=2,
        depth=1, depth_single_blocks=2), seed, dtype),
    lambda seed, tokens=8: text_cond(seed, tokens),
    lambda batch=1, size=None: torch.zeros(batch, 16, *(size or (64,))),
    attention_per_call=3, sizes=((64,), (96,)))

#: routes its blocks through ("block", i) patches that get no transformer_options: ClusCa cannot see the run
HUNYUAN3D_21 = GenericModel(
    "Hunyuan3Dv2_1",
    lambda seed=0, dtype=torch.float32: build(sm.Hunyuan3Dv2_1, dict(
        image_model="hunyuan3d2_1", in_channels=16, hidden_size=64, context_dim=TEXT, depth=2, num_heads=2,
        num_moe_layers=0, guidance_cond_proj_dim=None), seed, dtype),
    lambda seed, tokens=8: text_cond(seed, tokens),
    lambda batch=1, size=None: torch.zeros(batch, 16, *(size or (64,))),
    attention_per_call=0, sizes=((64,), (96,)))     # (its attention takes no transformer_options: not counted)

GENERIC_MODELS = (SD3, AURAFLOW, HUNYUAN3D)


def tiny_sd15(seed: int = 0, dtype=torch.float32) -> comfy.model_patcher.ModelPatcher:
    """A tiny SD 1.x UNet: no transformer blocks behind ``patches_replace["dit"]`` and no family description,
    so no ClusCa (the model passes through). Sample it with 4-channel latents and (1, tokens, 32) contexts."""
    return build(sm.SD15, dict(use_spatial_transformer=True, image_size=32, in_channels=4, out_channels=4,
                               model_channels=32, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                               transformer_depth_output=[1, 1], transformer_depth_middle=1, context_dim=TEXT,
                               use_linear_in_transformer=False, adm_in_channels=None, use_temporal_attention=False,
                               num_head_channels=16, num_heads=-1), seed, dtype)