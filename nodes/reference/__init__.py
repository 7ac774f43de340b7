"""Small trained reference models of the architectures ClusCa accelerates (FLUX, HunyuanVideo, DiT, Qwen-Image,
FLUX.2, Wan 2.1), bundled in ``reference_models/``, and their nodes. See ``docs/reference_models.md``.

Python API (benchmarks, tests)::

    from <pack>.nodes.reference import list_reference_models, load_reference_model
    model, spec = load_reference_model("flux_shapes")
    positive, negative = spec.conditioning("red circle")
    latent = spec.empty_latent(batch=4)              # {"samples": ...}; video: frames=...
    images = spec.decode(sampled_latent)             # (B[*frames], H, W, 3) in [0, 1]
"""

from .loader import REFERENCE_DIR, build_model, list_reference_models, load_reference_model, read_reference_file
from .spec import PixelLatent, PromptError, ReferenceSpec, TextEmbedder

__all__ = ["REFERENCE_DIR", "PixelLatent", "PromptError", "ReferenceSpec", "TextEmbedder", "build_model",
           "list_reference_models", "load_reference_model", "read_reference_file"]
