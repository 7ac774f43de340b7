"""Model-config fields that differ between the ComfyUI versions the pack runs on, in one place.

Newer ComfyUI versions add required fields to the model parameter dataclasses (``FluxParams.txt_ids_dims``,
``HunyuanVideoParams.meanflow_sum``, ...) that older ones do not know. A config written once (the bundled
reference models' metadata, the test suite's tiny models) gets each field the running version has, with the
value that keeps the behaviour the config had where the field did not exist yet; such a field at that value is
removed where the running version lacks it (a config written on a newer version loads on an older one).
"""

from __future__ import annotations

import dataclasses
import importlib

#: image_model -> (module, parameter dataclass, {field: value that keeps the older behaviour})
VERSION_FIELDS = {
    "flux": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": []}),
    # FLUX.2 (four RoPE axes): older versions put the text positions on the last axis
    "flux2": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": [3]}),
    "chroma": ("comfy.ldm.chroma.model", "ChromaParams", {"txt_ids_dims": [], "vec_in_dim": None}),
    "chroma_radiance": ("comfy.ldm.chroma_radiance.model", "ChromaRadianceParams",
                        {"txt_ids_dims": [], "vec_in_dim": None, "use_x0": False, "use_sequential_txt_ids": False}),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model", "HunyuanVideoParams",
                      {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}),
}


def with_version_fields(unet_config: dict) -> dict:
    """Add (in place, without overriding given values) the version-dependent fields of ``unet_config``'s
    family that the running ComfyUI has, and drop those it lacks where they hold the older behaviour's value;
    returns ``unet_config``."""
    entry = VERSION_FIELDS.get(unet_config.get("image_model"))
    if entry is None:
        return unet_config
    module, name, defaults = entry
    try:
        params = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return unet_config
    known = {f.name for f in dataclasses.fields(params)}
    for field, value in defaults.items():
        if field in known:
            unet_config.setdefault(field, value)
        elif field in unet_config and unet_config[field] == value:
            del unet_config[field]
    return unet_config
