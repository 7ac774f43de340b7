"""Every model family ClusCa supports: one declarative description each (``nodes.adapters.spec.Family``).

Adding a family is one entry here and its module (block kinds, streams, branches, modulation, call tokens)
plus its tests; the shared code in ``nodes.adapters`` runs it. The order matters only where several entries
share a model class (the first that accepts a model takes it).
"""

from __future__ import annotations

from .dit import DIT
from .flux import CHROMA, CHROMA_RADIANCE, FLUX1, FLUX2, OVIS_LONGCAT
from .hunyuan_video import HUNYUAN_VIDEO
from .lumina import LUMINA2, Z_IMAGE, Z_IMAGE_PIXEL

FAMILIES = (FLUX1, FLUX2, OVIS_LONGCAT, CHROMA, CHROMA_RADIANCE, HUNYUAN_VIDEO, DIT, Z_IMAGE, LUMINA2, Z_IMAGE_PIXEL)
