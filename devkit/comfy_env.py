"""Real ComfyUI on CPU for the tests: bootstrap, load the pack through ComfyUI's own loader, tiny models.

ComfyUI 0.3.75 is unpacked by ``scripts/setup_env.sh`` into ``.comfyui/ComfyUI`` (override with
``CLUSCA_COMFYUI_DIR``). Nothing here mocks ComfyUI: models come from ``comfy.supported_models``, patching
from ``ModelPatcher``, sampling from ``comfy.sample`` / ``comfy.samplers``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("CLUSCA_COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI"))

_PACK = None


def bootstrap():
    """Import ComfyUI in CPU mode (args.cpu must be set before comfy.model_management is imported)."""
    if not (COMFY_DIR / "comfyui_version.py").exists():
        raise RuntimeError(f"ComfyUI not found at {COMFY_DIR}; run scripts/setup_env.sh first")
    if str(COMFY_DIR) not in sys.path:
        sys.path.insert(0, str(COMFY_DIR))
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401
    return COMFY_DIR


def load_pack():
    """Load this repository as a custom node the way ComfyUI does (``nodes.load_custom_node``)."""
    global _PACK
    if _PACK is not None:
        return _PACK
    bootstrap()
    import nodes
    ok = asyncio.run(nodes.load_custom_node(str(REPO)))
    if not ok:
        raise RuntimeError("ComfyUI failed to load the pack")
    _PACK = sys.modules[str(REPO).replace(".", "_x_")]
    return _PACK


def pack_module(name: str):
    """A submodule of the loaded pack, e.g. ``pack_module("nodes.patching")``."""
    import importlib
    pack = load_pack()
    return importlib.import_module(pack.__name__ + "." + name)
