"""The FLUX-style image families: one description each, all on the blocks of ``flux_layers``.

- FLUX.1 dev / schnell / Fill / Kontext: ``comfy.ldm.flux.model.Flux`` with per-block modulation.
- FLUX.2 dev / Klein: the same class with global modulation (its blocks hold none).
- Ovis-Image: the same class with the "yak" SiLU-gated MLP (and a text norm); LongCat-Image: FLUX.1 blocks
  with the text positions on RoPE axes 1 and 2. ComfyUI loads both as ``image_model="flux"`` and tells them
  apart by these parameters (``model_detection``: ``yak_mlp`` + ``txt_norm`` for Ovis, ``context_in_dim`` 3584
  without a pooled vector for LongCat, both with ``txt_ids_dims`` [1, 2]); ComfyUI versions without those
  parameters (0.3.75) have neither model.
- Chroma / Chroma Radiance: FLUX blocks without modulation, per-block modulation from the approximator; some
  block indices may be skipped by the model (the clustering then uses the last double block that ran).
Kontext / FLUX.2 reference latents are cached, clustered and refreshed with the image tokens. References with
their own timestep (``index_timestep_zero``) are cached too on FLUX.2, with per-token modulation; on models whose
blocks compute their own modulation (FLUX.1, Ovis, LongCat) such calls run in full.
"""

from __future__ import annotations

from ..adapters.spec import Family
from .flux_layers import DOUBLE, SINGLE, image_tokens


def _global_modulation(dm) -> bool:
    """Blocks built without modulation take it ready-made from the forward (FLUX.2's global modulation)."""
    blocks = getattr(dm, "double_blocks", None)
    return bool(blocks) and not getattr(blocks[0], "modulation", True)


def _param(dm, name, default=None):
    return getattr(getattr(dm, "params", None), name, default)


def _ovis(dm) -> bool:
    return bool(_param(dm, "yak_mlp", False)) and not _global_modulation(dm)


def _longcat(dm) -> bool:
    """FLUX.1 blocks with the text positions on axes 1 and 2 (where FLUX.1 has none)."""
    return list(_param(dm, "txt_ids_dims", None) or ()) == [1, 2] and not _param(dm, "yak_mlp", False) \
        and not _global_modulation(dm)


def _refuse_flux1(dm):
    if _global_modulation(dm):
        return "a FLUX.2 model"
    if _ovis(dm):
        return "an Ovis-Image model"
    if _longcat(dm):
        return "a LongCat-Image model"
    return None


FLUX1 = Family(
    key="flux", name="FLUX.1", model_class="comfy.ldm.flux.model:Flux", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, refuse=_refuse_flux1,
    notes="dev, schnell, Fill, Kontext; reference latents with their own timestep run in full")

FLUX2 = Family(
    key="flux2", name="FLUX.2", model_class="comfy.ldm.flux.model:Flux", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, refuse=lambda dm: None if _global_modulation(dm) else "not a FLUX.2 model",
    notes="dev and Klein (base and distilled); edit references cached with the image, also with their own "
          "timestep (index_timestep_zero: per-token modulation)")

OVIS_IMAGE = Family(
    key="ovis_image", name="Ovis-Image", model_class="comfy.ldm.flux.model:Flux",
    block_kinds=(DOUBLE, SINGLE), tokens=image_tokens,
    refuse=lambda dm: None if _ovis(dm) else "not an Ovis-Image model",
    notes="FLUX layout with the yak MLP and a text norm; refresh_scope 'all' keeps the single blocks' MLP half "
          "cached (the yak activation needs both halves)")

LONGCAT_IMAGE = Family(
    key="longcat_image", name="LongCat-Image", model_class="comfy.ldm.flux.model:Flux",
    block_kinds=(DOUBLE, SINGLE), tokens=image_tokens,
    refuse=lambda dm: None if _longcat(dm) else "not a LongCat-Image model",
    notes="FLUX.1 blocks, text positions on RoPE axes 1 and 2")

CHROMA = Family(
    key="chroma", name="Chroma", model_class="comfy.ldm.chroma.model:Chroma", block_kinds=(DOUBLE, SINGLE),
    tokens=image_tokens, notes="skipped blocks (skip_mmdit / skip_dit) are left alone")

CHROMA_RADIANCE = Family(
    key="chroma_radiance", name="Chroma Radiance", model_class="comfy.ldm.chroma_radiance.model:ChromaRadiance",
    block_kinds=(DOUBLE, SINGLE), tokens=image_tokens, notes="pixel space; the NeRF head runs every step")
