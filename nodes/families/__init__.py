"""Every model family ClusCa supports: one declarative description each (``nodes.adapters.spec.Family``).

Adding a family is one entry here and its module (block kinds, streams, branches, modulation, call tokens)
plus its tests; the shared code in ``nodes.adapters`` runs it. The order matters only where several entries
share a model class (the first that accepts a model takes it).
"""

from __future__ import annotations

from .dit import DIT
from .flux import CHROMA, CHROMA_RADIANCE, FLUX1, FLUX2, LONGCAT_IMAGE, OVIS_IMAGE
from .hunyuan_video import HUNYUAN_VIDEO
from .ltx import LTX_AV, LTXV
from .lumina import LUMINA2, Z_IMAGE, Z_IMAGE_PIXEL
from .qwen_image import QWEN_IMAGE
from .wan import WAN, WAN_ANIMATE, WAN_CAMERA, WAN_VACE

FAMILIES = (FLUX1, FLUX2, OVIS_IMAGE, LONGCAT_IMAGE, CHROMA, CHROMA_RADIANCE, HUNYUAN_VIDEO, QWEN_IMAGE, WAN,
            WAN_VACE, WAN_CAMERA, WAN_ANIMATE, LTXV, LTX_AV, Z_IMAGE, LUMINA2, Z_IMAGE_PIXEL, DIT)
