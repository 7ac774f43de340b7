"""DiT as a ComfyUI model: the model config (``supported_models_base.BASE``) and the ``BaseModel`` subclass.

- Prediction: eps (``ModelType.EPS``), on DiT's (ADM's) diffusion schedule: 1000 steps with betas *linear*
  from 1e-4 to 0.02. ComfyUI's beta schedule named ``"linear"`` is linear in sqrt(beta) (the LDM/SD
  schedule); the one linear in beta itself is ``"sqrt_linear"``, so that is the name used here.
- Latents: the SD 1.x VAE's (4 channels, scale factor 0.18215, as DiT was trained), so ComfyUI's
  ``VAEDecode`` with an SD 1.x VAE decodes them.
- Conditioning: class labels (see ``labels.py``), passed to the model as ``y``. A model without a null-class
  row warns once when the null class reaches it (see ``labels.py``).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.supported_models_base

from .labels import NO_CLASS, NO_NULL_CLASS_WARNING, labels_from_cond
from .model import DiT

log = logging.getLogger("ClusCa")

IMAGE_MODEL = "clusca_dit"

#: the published DiT sizes: name -> (depth, hidden size, heads)
ARCHITECTURES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
HEADS_BY_HIDDEN = {hidden: heads for _depth, hidden, heads in ARCHITECTURES.values()}

#: DiT / ADM diffusion schedule, in ComfyUI's ``sampling_settings`` terms (see the module docstring)
SAMPLING_SETTINGS = {"beta_schedule": "sqrt_linear", "linear_start": 1e-4, "linear_end": 0.02, "timesteps": 1000}


def heads_for_hidden(hidden: int) -> int:
    """Attention heads for a hidden size. The published sizes use 1152 -> 16, 1024 -> 16, 768 -> 12 and
    384 -> 6. Any other size gets heads of 64 channels (hidden // 64) when 64 divides it, else heads of 72
    channels (DiT-XL's head size) when 72 divides it, else a single head."""
    if hidden in HEADS_BY_HIDDEN:
        return HEADS_BY_HIDDEN[hidden]
    for head_dim in (64, 72):
        if hidden % head_dim == 0:
            return hidden // head_dim
    return 1


def architecture_name(depth: int, hidden: int, patch_size: int) -> Optional[str]:
    """'DiT-XL/2' and friends for the published sizes, None for others."""
    for name, (d, h, _heads) in ARCHITECTURES.items():
        if (d, h) == (depth, hidden):
            return f"DiT-{name}/{patch_size}"
    return None


def make_unet_config(input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152,
                     depth: int = 28, num_heads: Optional[int] = None, mlp_ratio: float = 4.0,
                     num_classes: int = 1000, learn_sigma: bool = True, null_class: bool = True) -> dict:
    """The ``unet_config`` of a DiT (the keyword arguments of :class:`DiT`); ``null_class`` False for a model
    trained without label dropout (no null-class row)."""
    return dict(image_model=IMAGE_MODEL, input_size=int(input_size), patch_size=int(patch_size),
                in_channels=int(in_channels), hidden_size=int(hidden_size), depth=int(depth),
                num_heads=int(num_heads if num_heads is not None else heads_for_hidden(hidden_size)),
                mlp_ratio=float(mlp_ratio), num_classes=int(num_classes), learn_sigma=bool(learn_sigma),
                null_class=bool(null_class))


class DiTModel(comfy.model_base.BaseModel):
    """ComfyUI's model around :class:`DiT`: eps prediction, class labels from the conditioning."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.EPS, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=DiT)
        self.warned_no_null_class = False

    def extra_conds(self, **kwargs):
        embedder = self.diffusion_model.y_embedder
        labels = labels_from_cond(kwargs, embedder.num_classes, embedder.has_null_class)
        if not embedder.has_null_class and not self.warned_no_null_class and bool((labels == NO_CLASS).any()):
            self.warned_no_null_class = True
            log.warning(NO_NULL_CLASS_WARNING)
        return {"y": comfy.conds.CONDRegular(labels)}


class DiTModelConfig(comfy.supported_models_base.BASE):
    """Model config of a class-conditional DiT (built by the pack's loader; not auto-detected by ComfyUI)."""

    unet_config = {"image_model": IMAGE_MODEL}
    unet_extra_config = {}
    sampling_settings = dict(SAMPLING_SETTINGS)
    latent_format = comfy.latent_formats.SD15
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
    memory_usage_factor = 1.0

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.EPS

    def get_model(self, state_dict, prefix="", device=None):
        return DiTModel(self, model_type=self.model_type(state_dict, prefix), device=device)
