"""Tiny seeded models of the FLUX-style variants, built from ComfyUI's own config classes, plus their inputs.

- FLUX.2 dev (guidance embedding) and Klein-style (none): ``supported_models.Flux2``, global modulation, four
  RoPE axes, SiLU-gated bias-free MLPs, patch size 1; ``model_base.Flux2`` pads the text to 512 tokens.
- Chroma: ``supported_models.Chroma``, modulation from the approximator (``distilled_guidance_layer``).
- Chroma Radiance: ``supported_models.ChromaRadiance``, pixel space (3 channels), patch size 4, a small NeRF head.
- Ovis-Image: FLUX with the yak MLP and a text norm, text positions on axes 1 and 2 (``FluxSchnell`` config,
  the one ComfyUI's detection picks for it); LongCat-Image: ``supported_models.LongCatImage`` (FLUX.1 blocks,
  no pooled vector, 3584-wide context, text positions on axes 1 and 2). Both only exist where ``FluxParams``
  has ``yak_mlp`` / ``txt_ids_dims`` (ComfyUI 0.33; not 0.3.75).

Each ``VARIANTS`` entry says whether the running ComfyUI has the model (``available()``: a reason when not), and
builds the model, a conditioning and a zero latent. Weights come from ``devkit.tiny_models.init_weights``
(unit-variance activations, so that caching is not trivially exact).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .tiny_models import CPU, init_weights, with_version_fields

import comfy.model_patcher  # noqa: E402  (tiny_models bootstraps ComfyUI first)
import comfy.supported_models  # noqa: E402

#: the length model_base.Flux2 pads every text conditioning to
FLUX2_TEXT_TOKENS = 512


def _params_fields(module: str, name: str) -> set:
    try:
        return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    except (ImportError, AttributeError):
        return set()


def unit_norm_weights(module: torch.nn.Module) -> None:
    """Norm layers' gains to 1, as in a trained model. ``init_weights`` does that for parameters named
    ``scale`` (ComfyUI 0.3.75's own RMSNorm); 0.33's ``comfy.ops.RMSNorm`` names its gain ``weight``, which would
    otherwise get 0.02-sized values and shrink e.g. Chroma Radiance's NeRF head output to nearly nothing."""
    with torch.no_grad():
        for sub in module.modules():
            if "Norm" in type(sub).__name__:
                for name, p in sub.named_parameters(recurse=False):
                    if name in ("weight", "scale") and p.ndim == 1:
                        p.fill_(1.0)


def build(config_class, unet_config: dict, seed: int = 0, dtype=torch.float32) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around ``config_class(unet_config)``'s model with seeded weights, on the CPU."""
    mc = config_class(with_version_fields(dict(unet_config)))
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, seed)
    unit_norm_weights(base.diffusion_model)
    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


# -- configs ------------------------------------------------------------------------------------------

def flux2_config(guidance_embed=True, hidden=32, heads=2, depth=2, single=2, context_dim=32, channels=16) -> dict:
    """FLUX.2 as ComfyUI's detection describes it (global modulation, SiLU MLP, no biases, "index" references
    at scale 10), with head size 16 on four RoPE axes of 4."""
    head = hidden // heads
    return dict(image_model="flux2", in_channels=channels, out_channels=channels, vec_in_dim=None,
                context_in_dim=context_dim, hidden_size=hidden, mlp_ratio=3.0, num_heads=heads, depth=depth,
                depth_single_blocks=single, axes_dim=[head // 4] * 4, theta=2000, patch_size=1, qkv_bias=False,
                guidance_embed=guidance_embed, global_modulation=True, mlp_silu_act=True, ops_bias=False,
                default_ref_method="index", ref_index_scale=10.0)


def chroma_config(hidden=64, heads=4, depth=2, single=2, context_dim=64) -> dict:
    head = hidden // heads
    a = head // 8 * 2
    return dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=context_dim,
                hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
                axes_dim=[head - 2 * a, a, a], theta=10000, patch_size=2, qkv_bias=True,
                in_dim=64, out_dim=hidden, hidden_dim=32, n_layers=2)


def chroma_radiance_config(patch=4, **kw) -> dict:
    cfg = chroma_config(**kw)
    cfg.update(image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=patch, nerf_hidden_size=16,
               nerf_mlp_ratio=2, nerf_depth=2, nerf_max_freqs=4, nerf_tile_size=0, nerf_final_head_type="linear",
               nerf_embedder_dtype=None)
    return cfg


def flux_like_config(hidden=64, heads=4, depth=2, single=2, context_dim=64, **extra) -> dict:
    head = hidden // heads
    a = head // 8 * 2
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=context_dim,
               hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
               axes_dim=[head - 2 * a, a, a], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False,
               txt_ids_dims=[1, 2])
    cfg.update(extra)
    return cfg


def ovis_config(**kw) -> dict:
    """Ovis-Image: yak MLP, RMS text norm, text positions on axes 1 and 2 (context 2048 like its 2B encoder)."""
    return flux_like_config(context_dim=2048, yak_mlp=True, txt_norm=True, **kw)


def longcat_config(**kw) -> dict:
    """LongCat-Image: FLUX.1 blocks, no pooled vector, 3584-wide context, text positions on axes 1 and 2."""
    return flux_like_config(context_dim=3584, **kw)


# -- conditionings ------------------------------------------------------------------------------------

def text_cond(seed: int, tokens=8, context_dim=32, guidance: Optional[float] = None, batch=1, pooled=None):
    """A CONDITIONING list: random text embeddings, ``pooled_output`` (0.3.75's FLUX-class models want the
    key, None is accepted) and optionally a guidance value."""
    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": pooled}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[torch.randn(batch, tokens, context_dim, generator=g), extra]]


def with_references(cond, refs, method: Optional[str] = None):
    """The conditioning with ``reference_latents`` (what ReferenceLatent adds) and optionally a
    ``reference_latents_method`` (FluxKontextMultiReferenceLatentMethod)."""
    out = []
    for c, extra in cond:
        extra = dict(extra, reference_latents=list(refs))
        if method is not None:
            extra["reference_latents_method"] = method
        out.append([c, extra])
    return out


# -- the variants -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One tiny model of a FLUX-style variant and its inputs.

    blocks:     attention calls of one model evaluation (double + single blocks).
    channels / patch: the latent's channels and the model's patch size (tokens = (H / patch) * (W / patch)).
    """
    name: str
    config_class: str              # attribute of comfy.supported_models
    make_config: Callable
    context_dim: int
    channels: int
    patch: int
    guidance: Optional[float]
    size: tuple = (16, 16)         # the default latent size (64 image tokens)
    needs: tuple = ()              # (module, params class, field) the running ComfyUI must have
    blocks: int = 4

    def available(self) -> Optional[str]:
        """None when the running ComfyUI can build this model, else why not."""
        if not hasattr(comfy.supported_models, self.config_class):
            return f"this ComfyUI has no supported_models.{self.config_class}"
        for module, cls, field in self.needs:
            if field not in _params_fields(module, cls):
                return f"this ComfyUI's {cls} has no {field}"
        return None

    def make(self, seed=0, dtype=torch.float32, **config) -> comfy.model_patcher.ModelPatcher:
        return build(getattr(comfy.supported_models, self.config_class), self.make_config(**config), seed, dtype)

    def cond(self, seed: int, tokens=8, batch=1):
        return text_cond(seed, tokens, self.context_dim, self.guidance, batch)

    def latent(self, batch=1, size=None) -> torch.Tensor:
        return torch.zeros(batch, self.channels, *(size or self.size))


_FLUX = ("comfy.ldm.flux.model", "FluxParams")

VARIANTS = {
    "flux2": Variant("FLUX.2", "Flux2", lambda **kw: flux2_config(guidance_embed=True, **kw), 32, 16, 1, 3.5,
                     size=(8, 8)),
    "flux2_klein": Variant("FLUX.2", "Flux2", lambda **kw: flux2_config(guidance_embed=False, **kw), 32, 16, 1,
                           None, size=(8, 8)),
    "chroma": Variant("Chroma", "Chroma", chroma_config, 64, 16, 2, 0.0),
    "chroma_radiance": Variant("Chroma Radiance", "ChromaRadiance", chroma_radiance_config, 64, 3, 4, 0.0,
                               size=(32, 32)),
    "ovis_image": Variant("Ovis-Image", "FluxSchnell", ovis_config, 2048, 16, 2, None,
                          needs=(_FLUX + ("yak_mlp",), _FLUX + ("txt_ids_dims",))),
    "longcat_image": Variant("LongCat-Image", "LongCatImage", longcat_config, 3584, 16, 2, None,
                             needs=(_FLUX + ("txt_ids_dims",),)),
}
