"""ComfyUI-ClusCa: cluster-driven feature caching (ClusCa) for diffusion transformers in ComfyUI.

ComfyUI loads this package from ``custom_nodes/`` and calls :func:`comfy_entrypoint` (V3 node API).
``clusca_core`` has no ComfyUI dependency and can be imported on its own.
"""

import logging

WEB_DIRECTORY = "./web"

try:
    import comfy  # noqa: F401  (only inside ComfyUI)
except ImportError:
    comfy = None

if comfy is not None:
    try:
        from .nodes import comfy_entrypoint  # noqa: F401
    except ImportError as exc:
        logging.getLogger("ClusCa").warning(
            "ComfyUI-ClusCa needs a ComfyUI with the V3 node API (comfy_api.latest); not loaded: %s", exc)
