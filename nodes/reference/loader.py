"""Reading and writing reference model files (``reference_models/*.safetensors``).

A file holds the diffusion model's weights under ``diffusion_model.``, the conditioning tables under
``conditioning.`` (the text models) and the :class:`ReferenceSpec` as JSON in the safetensors metadata
(key ``clusca_reference``). The model is built from that metadata through ComfyUI's own model config
classes (``comfy.supported_models.FluxSchnell`` / ``HunyuanVideo`` / ``QwenImage`` / ``Flux2`` / ``WAN21_T2V``,
the pack's ``DiTModelConfig``), so it is the same ``BaseModel`` / ``ModelPatcher`` a checkpoint loader would
give.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import torch

from ..compat import with_version_fields
from .spec import EMBEDDER_PREFIX, MODEL_PREFIX, ReferenceSpec

log = logging.getLogger("ClusCa")

#: the bundled models, at the root of the pack
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_models"
SUFFIX = ".safetensors"


def list_reference_models(directory: Union[str, Path, None] = None) -> list:
    """File names of the bundled reference models, sorted (e.g. ``['dit_shapes.safetensors', ...]``)."""
    d = Path(directory) if directory is not None else REFERENCE_DIR
    return sorted(p.name for p in d.glob("*" + SUFFIX)) if d.is_dir() else []


def resolve(name: Union[str, Path], directory: Union[str, Path, None] = None) -> Path:
    """The path of a reference model given its file name, its name without suffix, or a path."""
    p = Path(name)
    if p.is_file():
        return p
    d = Path(directory) if directory is not None else REFERENCE_DIR
    for candidate in (d / p.name, d / (p.name + SUFFIX)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no reference model {str(name)!r}; bundled: {', '.join(list_reference_models(d)) or 'none'}")


def read_reference_file(path: Union[str, Path]) -> tuple[dict, ReferenceSpec]:
    """(state dict, spec) of a reference model file; the spec's embedder holds the conditioning tables."""
    import safetensors
    path = Path(path)
    with safetensors.safe_open(str(path), framework="pt") as f:      # one open: metadata and tensors
        metadata = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    spec = ReferenceSpec.from_metadata(metadata, name=path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name)
    embedder = spec.make_embedder()
    if embedder is not None:
        emb_sd = {k[len(EMBEDDER_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(EMBEDDER_PREFIX)}
        embedder.load_state_dict(emb_sd)
        embedder.eval().requires_grad_(False)
        spec.embedder = embedder
    return sd, spec


def build_model(spec: ReferenceSpec, state_dict: Optional[dict] = None, dtype: torch.dtype = torch.float32,
                load_device=None, offload_device=None):
    """A ComfyUI ``ModelPatcher`` for the spec's architecture; weights from ``state_dict`` (keys with or
    without the ``diffusion_model.`` prefix) when given, else left as ``comfy.ops`` makes them (uninitialised)."""
    import comfy.model_management
    import comfy.model_patcher
    load_device = load_device if load_device is not None else comfy.model_management.get_torch_device()
    offload_device = offload_device if offload_device is not None else comfy.model_management.unet_offload_device()
    model_config = spec.model_config_class()(with_version_fields(dict(spec.unet_config)))
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, list(model_config.supported_inference_dtypes))
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({}, "", device=offload_device)
    if state_dict is not None:
        sd = {k[len(MODEL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)} \
            if any(k.startswith(MODEL_PREFIX) for k in state_dict) else dict(state_dict)
        # the key names this ComfyUI version's model uses (e.g. RMSNorm ``scale`` -> ``weight`` in 0.33), as
        # its checkpoint loaders do
        sd = model_config.process_unet_state_dict(sd)
        expected = model.diffusion_model.state_dict()
        missing = [k for k in expected if k not in sd]
        unexpected = [k for k in sd if k not in expected]
        if missing or unexpected:
            raise ValueError(f"reference model '{spec.name}': weights do not match its config "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.diffusion_model.load_state_dict({k: v.to(dtype) for k, v in sd.items()})
    model.diffusion_model.requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_reference_model(name: Union[str, Path], dtype: torch.dtype = torch.float32, directory=None):
    """(MODEL, ReferenceSpec) of a bundled reference model (file name with or without ``.safetensors``, or
    a path). Weights are stored in half precision and loaded as ``dtype`` (float32 by default)."""
    path = resolve(name, directory)
    sd, spec = read_reference_file(path)
    model = build_model(spec, sd, dtype=dtype)
    # how ComfyUI (0.33) makes a fresh copy of this model, e.g. one per device for the multi-GPU CFG split
    # (ModelPatcher.deepclone_multigpu): the loader's own call again
    model.cached_patcher_init = (reload_reference_model, (str(path), dtype))
    log.info("ClusCa - reference model %s: %s (%s), %.2f M parameters", path.name, spec.model_class, spec.family,
             sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6)
    return model, spec


def reload_reference_model(path: str, dtype: torch.dtype = torch.float32, disable_dynamic: bool = False):
    """A fresh MODEL from a reference model file (``cached_patcher_init`` of the models this loader makes)."""
    return load_reference_model(path, dtype)[0]


def save_reference_file(path: Union[str, Path], spec: ReferenceSpec, diffusion_state_dict: dict,
                        storage_dtype: torch.dtype = torch.float16, full_precision=("pos_embed",)) -> int:
    """Write a reference model file; returns its size in bytes. Weights are stored as ``storage_dtype``;
    tensors whose name ends with one of ``full_precision`` (DiT's fixed sin-cos position table) as float32."""
    import safetensors.torch

    def stored(k, v):
        dt = torch.float32 if k.endswith(tuple(full_precision)) else storage_dtype
        return v.detach().to(dt).contiguous().cpu()

    tensors = {MODEL_PREFIX + k: stored(k, v) for k, v in diffusion_state_dict.items()}
    if spec.embedder is not None:
        for k, v in spec.embedder.state_dict().items():
            tensors[EMBEDDER_PREFIX + k] = v.detach().to(storage_dtype).contiguous().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata=spec.to_metadata())
    return path.stat().st_size
