"""The FLUX-style image families: one description each, all on the blocks of ``flux_layers``.

- FLUX.1 dev / schnell / Fill / Kontext: ``comfy.ldm.flux.model.Flux`` with per-block modulation.
- FLUX.2 dev / Klein: the same class with global modulation (its blocks hold none).
- Ovis-Image / LongCat-Image: the same class with the "yak" SiLU-gated MLP and a text norm.
- Chroma / Chroma Radiance: FLUX blocks without modulation, per-block modulation from the approximator; some
  block indices may be skipped by the model (the clustering then uses the last double block that ran).
Kontext / FLUX.2 reference latents are cached, clustered and refreshed with the image tokens; references with
their own timestep (``index_timestep_zero``) are computed in full.
"""

from __future__ import annotations

from ..adapters.spec import Family
from .flux_layers import DOUBLE, SINGLE, image_tokens


def _global_modulation(dm) -> bool:
    """Blocks built without modulation take it ready-made from the forward (FLUX.2's global modulation)."""
    blocks = getattr(dm, "double_blocks", None)
    return bool(blocks) and not getattr(blocks[0], "modulation", True)


def _yak(dm) -> bool:
    return bool(getattr(getattr(dm, "params", None), "yak_mlp", False))


def _refuse_flux1(dm):
    if _global_modulation(dm):
        return "a FLUX.2 model"
    if _yak(dm):
        return "an Ovis-Image / LongCat-Image model"
    return None


FLUX1 = Family(
    key="flux", name="FLUX.1", model_class="comfy.ldm.flux.model:Flux", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, refuse=_refuse_flux1,
    notes="dev, schnell, Fill, Kontext; reference latents with their own timestep run in full")

FLUX2 = Family(
    key="flux2", name="FLUX.2", model_class="comfy.ldm.flux.model:Flux", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, refuse=lambda dm: None if _global_modulation(dm) else "not a FLUX.2 model",
    notes="dev and Klein (base and distilled); edit references with index_timestep_zero run in full")

OVIS_LONGCAT = Family(
    key="flux_yak", name="Ovis-Image / LongCat-Image", model_class="comfy.ldm.flux.model:Flux",
    block_kinds=(DOUBLE, SINGLE), tokens=image_tokens,
    refuse=lambda dm: None if _yak(dm) and not _global_modulation(dm) else "not an Ovis / LongCat model",
    notes="FLUX layout with the yak MLP and a text norm")

CHROMA = Family(
    key="chroma", name="Chroma", model_class="comfy.ldm.chroma.model:Chroma", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, notes="skipped blocks are left alone")

CHROMA_RADIANCE = Family(
    key="chroma_radiance", name="Chroma Radiance", model_class="comfy.ldm.chroma_radiance.model:ChromaRadiance",
    block_kinds=(DOUBLE, SINGLE), tokens=image_tokens, notes="pixel space; the NeRF head runs every step")
