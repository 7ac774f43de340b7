"""Loading DiT checkpoints in the official key layout, and the ``Load DiT Checkpoint (ClusCa)`` node.

Reads the files of facebookresearch/DiT (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``) and any other
DiT size saved the same way, as ``.pt``/``.pth``/``.ckpt`` (loaded weights-only, never unpickling code) or
``.safetensors``. Keys may carry a prefix (``module.``, ``model.diffusion_model.``...) and ``.pt`` files may wrap
the weights in ``{"ema": ...}`` / ``{"model": ...}`` (training checkpoints). The checkpoints the official
``train.py`` writes, ``{"model", "ema", "opt", "args"}``, hold their command line as an ``argparse.Namespace``:
that one class is allowed while such a file is read weights-only (any other object is still refused), and the
``"ema"`` weights are used when present, as the official ``sample.py`` does. Everything about the architecture
comes from the weights:

- hidden size, input channels and patch size (2, 4 or 8): ``x_embedder.proj.weight`` (hidden, C, p, p)
- depth: the ``blocks.N.`` indices; MLP ratio: ``blocks.0.mlp.fc1.weight``
- classes: ``y_embedder.embedding_table.weight`` rows minus the null-class row. A model trained without label
  dropout has no null row: that is the case when the table has exactly 1000 rows (ImageNet's classes), or
  exactly ``args.num_classes`` rows in a ``train.py`` checkpoint. Such a model cannot do classifier-free
  guidance; see ``labels.py``
- learned sigma: ``final_layer.linear.weight`` has p*p*2C rows (eps + variance) instead of p*p*C
- input size: ``pos_embed`` (1, (input/p)^2, hidden); a file without it is taken as 256 px (latent 32)
- heads: not stored; see :func:`config.heads_for_hidden`
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pickle
import re

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths

from .config import DiTModelConfig, architecture_name, heads_for_hidden, make_unet_config
from .labels import NUM_IMAGENET_CLASSES, null_negative_is_positive
from .model import describe

log = logging.getLogger("ClusCa")

FOLDERS = ("diffusion_models", "checkpoints")
DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOP_LEVEL_KEYS = (
    "x_embedder.proj.weight", "x_embedder.proj.bias",
    "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
    "y_embedder.embedding_table.weight",
    "final_layer.linear.weight", "final_layer.linear.bias",
    "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias",
)
BLOCK_KEYS = tuple(f"{module}.{p}" for module in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
                   for p in ("weight", "bias"))
#: keys that may be absent: the fixed position table is recomputed when missing
OPTIONAL_KEYS = ("pos_embed",)
DEFAULT_INPUT_SIZE = 32
#: the only non-container class a ``.pt`` may hold besides tensors: the command line the official train.py
#: stores under "args" (allowed for that one weights-only load, never globally)
ALLOWED_CHECKPOINT_CLASSES = (argparse.Namespace,)
#: the wrappers of training checkpoints, in the order they are looked for ("ema" first, as DiT's sample.py)
WRAPPERS = ("ema", "model", "state_dict", "module")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


class DiTCheckpointError(ValueError):
    """A file that is not a usable DiT checkpoint; the message names the file and what is wrong."""


def required_keys(depth: int) -> list[str]:
    return list(TOP_LEVEL_KEYS) + [f"blocks.{i}.{k}" for i in range(depth) for k in BLOCK_KEYS]


def _list_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def normalise_state_dict(sd: dict, source: str = "checkpoint") -> dict:
    """The DiT weights of a loaded file: unwrapped from training-checkpoint dicts (``"ema"`` before
    ``"model"``), or from a dict with a single entry holding a dict, key prefix removed."""
    if isinstance(sd, dict) and not any(isinstance(k, str) and k.endswith("x_embedder.proj.weight") for k in sd):
        for wrapper in WRAPPERS:
            if isinstance(sd.get(wrapper), dict):
                if wrapper == "ema" and "model" in sd:
                    log.info("ClusCa DiT loader: '%s' is a training checkpoint; using its EMA weights (\"ema\"), "
                             "as DiT's sample.py does", os.path.basename(source))
                return normalise_state_dict(sd[wrapper], source)
        if len(sd) == 1 and isinstance(next(iter(sd.values())), dict):
            return normalise_state_dict(next(iter(sd.values())), source)
    anchor = "x_embedder.proj.weight"
    prefixes = [k[:-len(anchor)] for k in sd if isinstance(k, str) and k.endswith(anchor)]
    if len(prefixes) == 1 and prefixes[0]:
        p = prefixes[0]
        return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    return {k: v for k, v in sd.items() if isinstance(k, str)}


def training_num_classes(checkpoint: dict):
    """``args.num_classes`` of a checkpoint written by the official train.py, or None."""
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    n = getattr(args, "num_classes", None) if isinstance(args, argparse.Namespace) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def class_table_layout(rows: int, source: str, num_classes=None) -> tuple[int, bool]:
    """(classes, has a null-class row) of a label table with ``rows`` rows. ``num_classes`` (from a train.py
    checkpoint's args) decides when given; otherwise a table of exactly 1000 rows is ImageNet's classes
    without a null row (a model trained without label dropout), any other is classes + the null row."""
    if num_classes is not None:
        if rows == num_classes + 1:
            return num_classes, True
        if rows == num_classes:
            return num_classes, False
        log.warning("ClusCa DiT loader: '%s': its training args say %d classes but the label table has %d rows; "
                    "taking %d classes and a null-class row", os.path.basename(source), num_classes, rows, rows - 1)
    if rows == NUM_IMAGENET_CLASSES:
        return rows, False
    return rows - 1, True


def infer_unet_config(sd: dict, source: str = "checkpoint", num_classes=None) -> dict:
    """The architecture of a DiT state dict (official key layout), or DiTCheckpointError naming the missing
    keys. Only the tensors' shapes are read; ``num_classes`` (a train.py checkpoint's ``args.num_classes``)
    tells whether the label table has a null-class row (see :func:`class_table_layout`)."""
    depth = 1 + max((int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))), default=-1)
    missing = [k for k in required_keys(max(depth, 1)) if k not in sd]
    if missing:
        what = "no transformer blocks (blocks.N.*) and " if depth == 0 else ""
        raise DiTCheckpointError(f"'{source}' is not a complete DiT checkpoint in the official key layout: {what}"
                                 f"{len(missing)} required keys are missing: {_list_keys(missing)}")
    w = sd["x_embedder.proj.weight"]
    if len(w.shape) != 4 or w.shape[2] != w.shape[3]:
        raise DiTCheckpointError(f"'{source}': x_embedder.proj.weight has shape {tuple(w.shape)}; expected "
                                 "(hidden, channels, patch, patch)")
    hidden, in_channels, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    mlp_ratio = int(sd["blocks.0.mlp.fc1.weight"].shape[0]) / hidden
    num_classes, null_class = class_table_layout(int(sd["y_embedder.embedding_table.weight"].shape[0]), source,
                                                 num_classes)
    out_channels = int(sd["final_layer.linear.weight"].shape[0]) // (patch * patch)
    if out_channels not in (in_channels, 2 * in_channels):
        raise DiTCheckpointError(f"'{source}': final_layer.linear.weight has {sd['final_layer.linear.weight'].shape[0]} "
                                 f"rows; expected {patch * patch * in_channels} or {patch * patch * 2 * in_channels}")
    pos = sd.get("pos_embed")
    if pos is not None:
        tokens = int(pos.shape[-2])
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise DiTCheckpointError(f"'{source}': pos_embed has {tokens} positions, not a square token grid")
        input_size = grid * patch
    else:
        input_size = DEFAULT_INPUT_SIZE
        log.info("ClusCa DiT loader: '%s' has no pos_embed; assuming %d px (latent %d)", source,
                 input_size * 8, input_size)
    return make_unet_config(input_size=input_size, patch_size=patch, in_channels=in_channels, hidden_size=hidden,
                            depth=depth, num_heads=heads_for_hidden(hidden), mlp_ratio=mlp_ratio,
                            num_classes=num_classes, learn_sigma=out_channels == 2 * in_channels,
                            null_class=null_class)


def load_dit_state_dict(sd: dict, source: str = "checkpoint", dtype=None) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL from DiT weights in the official key layout (see the module docstring)."""
    classes = training_num_classes(sd)
    sd = normalise_state_dict(sd, source)
    unet_config = infer_unet_config(sd, source, classes)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model_config = DiTModelConfig(unet_config)
    supported = list(model_config.supported_inference_dtypes)
    if dtype is None:
        dtype = comfy.model_management.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                                                  supported_dtypes=supported,
                                                  weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, supported)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(sd, "")
    expected = model.diffusion_model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in sd.items()
             if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise DiTCheckpointError(f"'{source}': {len(wrong)} tensors do not have the shapes of the inferred "
                                 f"architecture: {_list_keys(wrong, 6)}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        log.warning("ClusCa DiT loader: '%s' has %d keys a DiT does not use (ignored): %s", source,
                    len(unexpected), _list_keys(unexpected, 6))
    model = model.to(offload_device)
    model.load_model_weights({k: v for k, v in sd.items() if k in expected}, "")
    dm = model.diffusion_model
    name = architecture_name(len(dm.blocks), dm.hidden_size, dm.patch_size) or "DiT"
    null = "" if dm.y_embedder.has_null_class else " and no null class (trained without label dropout: no CFG)"
    log.info("ClusCa DiT loader: %s - %s (%s), %d classes%s, %s weights", os.path.basename(source), name,
             describe(dm), dm.y_embedder.num_classes, null, str(dtype).replace("torch.", ""))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    if not dm.y_embedder.has_null_class:
        patcher.set_model_sampler_pre_cfg_function(null_negative_is_positive)
    return patcher


def _refused_global(exc: Exception) -> str:
    """The class torch's weights-only unpickler refused, as its message names it, or ''."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return m.group(1) if m else ""


def read_pickled_checkpoint(path: str):
    """What a ``.pt``/``.pth``/``.ckpt`` file holds, unpickled weights-only: tensors, containers, plain values
    and, for this one load, ``argparse.Namespace`` (train.py's ``args``); any other class is refused with
    DiTCheckpointError. Never runs code from the file."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)    # a scoped allow-list (torch >= 2.5)
    scope = safe_globals(list(ALLOWED_CHECKPOINT_CLASSES)) if safe_globals is not None else contextlib.nullcontext()
    kwargs = {"mmap": True} if getattr(comfy.utils, "MMAP_TORCH_FILES", False) else {}
    try:
        with scope:
            return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        what = f"an object of class {refused}" if refused else "objects that are not tensors or plain containers"
        raise DiTCheckpointError(
            f"'{path}' holds {what}; DiT checkpoints are read weights-only (no code from the file is ever run), "
            f"which allows tensors, plain containers and values, and argparse.Namespace (the 'args' of the "
            f"official train.py) only. Save the weights alone, e.g. torch.save(checkpoint['ema'], ...), or as "
            f".safetensors") from exc
    except Exception as exc:
        raise DiTCheckpointError(f"could not read '{path}' as a weights-only checkpoint: {type(exc).__name__}: "
                                 f"{exc}") from exc


def load_dit_checkpoint(path: str, dtype=None) -> comfy.model_patcher.ModelPatcher:
    """Read a DiT checkpoint file (``.pt`` weights-only, or ``.safetensors``) and build the model."""
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        try:
            sd = comfy.utils.load_torch_file(path, safe_load=True)
        except Exception as exc:
            raise DiTCheckpointError(f"could not read '{path}' as a safetensors file: {type(exc).__name__}: "
                                     f"{exc}") from exc
    else:
        sd = read_pickled_checkpoint(path)
    if not isinstance(sd, dict):
        raise DiTCheckpointError(f"'{path}' does not hold a state dict (a dict of weight names to tensors): it holds "
                                 f"a {type(sd).__name__}")
    return load_dit_state_dict(sd, path, dtype)


def checkpoint_names() -> list[str]:
    """Model files in ComfyUI's diffusion_models and checkpoints folders (each name once)."""
    names: list[str] = []
    for folder in FOLDERS:
        try:
            names.extend(n for n in folder_paths.get_filename_list(folder) if n not in names)
        except KeyError:
            continue
    return names


def resolve_checkpoint(name: str) -> str:
    for folder in FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path:
            return path
    raise FileNotFoundError(f"DiT checkpoint '{name}' was not found in models/diffusion_models or models/checkpoints")


class ClusCaDiTLoader(io.ComfyNode):
    """Loads a class-conditional DiT (e.g. DiT-XL/2) from its official checkpoint as a ComfyUI MODEL."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaDiTLoader",
            display_name="Load DiT Checkpoint (ClusCa)",
            category="ClusCa/DiT",
            description=("Loads a class-conditional ImageNet DiT (DiT-XL/2 256 or 512, or any XL/L/B/S size with "
                         "patch 2/4/8) from its official .pt or a .safetensors file; the architecture is read "
                         "from the weights. Use it with 'DiT Class Label (ClusCa)', KSampler and an SD 1.x VAE."),
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(),
                               tooltip="The DiT checkpoint, from models/diffusion_models or models/checkpoints "
                                       "(e.g. DiT-XL-2-256x256.pt). .pt files are read weights-only."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="Precision of the weights in memory. 'default' lets ComfyUI choose for "
                                       "your device (fp16/bf16 on most GPUs, fp32 on CPU)."),
            ],
            outputs=[io.Model.Output(tooltip="The DiT model (eps prediction, SD 1.x latents); connect it to "
                                             "Apply ClusCa or the sampler.")],
        )

    @classmethod
    def execute(cls, ckpt_name, weight_dtype="default") -> io.NodeOutput:
        if weight_dtype not in DTYPES:
            raise ValueError(f"weight_dtype must be one of {list(DTYPES)}; got {weight_dtype!r}")
        return io.NodeOutput(load_dit_checkpoint(resolve_checkpoint(ckpt_name), DTYPES[weight_dtype]))
