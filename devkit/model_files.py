"""Model files the way people download them, for the loader tests: a tiny seeded FLUX written as an official
checkpoint (``.safetensors`` for ComfyUI's UNETLoader), as GGUF (Q8_0 and the K-quant Q4_K, for city96's
ComfyUI-GGUF ``UnetLoaderGGUF``) and a tiny LoRA in the diffusers/PEFT layout ComfyUI's LoRA loader maps onto
FLUX; plus what it takes to load them through the real loader nodes (folder registration, the GGUF pack
loaded as a custom node, FLUX head detection on ComfyUI versions that assume full-size heads).

The architecture: hidden 256 with 2 heads of 128 and RoPE axes (16, 56, 56), i.e. real FLUX.1's head size,
so that ComfyUI's FLUX detection (which takes ``axes_dim`` = (16, 56, 56)) builds the model that was written.
Every block linear has rows of 256 or 1024 inputs, so the K-quant (256-element super-blocks) applies to all of
them; ``img_in``, ``txt_in`` and ``vector_in.in_layer`` (64 and 32 inputs) stay F16 in the K-quant file, as
llama.cpp-style quantisers leave tensors whose rows do not split into blocks.

The Q8_0 blocks come from the ``gguf`` package (``gguf.quants.quantize``); it cannot quantise K-quants in
Python, so :func:`quantize_q4_k` writes ``block_q4_K`` itself (ggml's layout, min/max per 32-value sub-block).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from .comfy_env import REPO, bootstrap
from .tiny_models import flux_cond, tiny_flux

bootstrap()

#: the tiny FLUX of the loader tests (``devkit.tiny_models.flux_config`` arguments)
LOADER_FLUX = dict(hidden=256, heads=2, depth=2, single=2, context_dim=64, vec_dim=32, axes_dim=(16, 56, 56))

#: where city96's ComfyUI-GGUF lives: ``CLUSCA_GGUF_PACK``, else ``shared/ComfyUI-GGUF`` beside the checkout
GGUF_PACK_DIR = Path(os.environ.get("CLUSCA_GGUF_PACK") or REPO.resolve().parent / "shared" / "ComfyUI-GGUF")

QK_K = 256          # values per K-quant super-block
Q4_K_BYTES = 144    # fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit values


def loader_flux_cond(seed: int, tokens=8, **kw):
    return flux_cond(seed, tokens=tokens, context_dim=LOADER_FLUX["context_dim"], vec_dim=LOADER_FLUX["vec_dim"], **kw)


def flux_state_dict(seed=0) -> dict:
    """The tiny FLUX's weights (float32) under an official FLUX.1 checkpoint's keys (``double_blocks.0.…``)."""
    m = tiny_flux(seed, **LOADER_FLUX)
    return {k: v.detach().float().clone() for k, v in m.model.diffusion_model.state_dict().items()}


def write_safetensors(sd: dict, path, dtype=torch.bfloat16) -> Path:
    """An official-style checkpoint (FLUX.1 is published in bfloat16)."""
    import safetensors.torch
    path = Path(path)
    safetensors.torch.save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(path))
    return path


# -- GGUF ----------------------------------------------------------------------------------------------------

def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """``x`` (rows, n) float32 with n a multiple of 256 -> ggml ``block_q4_K`` bytes, (rows, n / 256 * 144).

    Per super-block of 256: eight sub-blocks of 32 values, each ``value = d * sc * q - dmin * m`` with q in
    0..15 and 6-bit sc, m; d and dmin are fp16. Here sc and m come from each sub-block's min/max (the min is
    clamped to <= 0 so that m >= 0), scaled to 0..63 by the super-block's largest.
    """
    x = np.asarray(x, dtype=np.float32)
    rows, n = x.shape
    if n % QK_K:
        raise ValueError(f"Q4_K needs rows of a multiple of {QK_K} values, got {n}")
    blocks = x.reshape(-1, 8, 32)
    lo = np.minimum(blocks.min(axis=-1), 0.0)              # (B, 8), <= 0
    hi = np.maximum(blocks.max(axis=-1), lo)
    step = (hi - lo) / 15.0                                 # per sub-block scale
    offset = -lo                                            # per sub-block min, >= 0
    d = (step.max(axis=-1) / 63.0).astype(np.float16)       # (B,)
    dmin = (offset.max(axis=-1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(step / d32), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmin32 > 0, np.rint(offset / dmin32), 0).clip(0, 63).astype(np.uint8)
        scale = (d32 * sc)[..., None]                       # (B, 8, 1)
        shift = (dmin32 * m)[..., None]
        q = np.where(scale > 0, np.rint((blocks + shift) / scale), 0).clip(0, 15).astype(np.uint8)
    # 12 scale bytes: 0-3 low 6 bits of sc[0:4] (top bits: sc[4:8] >> 4), 4-7 the same for m,
    # 8-11 low nibbles of sc[4:8] and (high nibble) m[4:8]
    packed = np.empty((blocks.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    # 128 value bytes: for each 64 values (sub-blocks 2j, 2j+1) byte l = q[2j][l] | q[2j+1][l] << 4
    pairs = q.reshape(-1, 4, 2, 32)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return out.reshape(rows, n // QK_K * Q4_K_BYTES)


def gguf_tensor_type(name: str, shape: tuple, qtype):
    """The type a tensor is stored at: 1-D and tiny tensors F32, rows that do not split into the quant's
    blocks F16, everything else ``qtype``."""
    import gguf
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if len(shape) < 2 or int(np.prod(shape)) <= 1024:
        return gguf.GGMLQuantizationType.F32
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def write_gguf(sd: dict, path, qtype: str) -> dict:
    """The state dict as a GGUF file with ``general.architecture`` = flux (what ComfyUI-GGUF's converter
    writes); ``qtype`` "Q8_0" or "Q4_K". Returns {tensor name: stored type name}."""
    import gguf
    qt = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(path), arch="flux")
    types = {}
    for name, tensor in sd.items():
        data = tensor.float().numpy()
        t = gguf_tensor_type(name, data.shape, qt)
        if t == gguf.GGMLQuantizationType.Q4_K:
            blob = quantize_q4_k(data.reshape(-1, data.shape[-1]))
        elif t in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            blob = data.astype(np.float32 if t == gguf.GGMLQuantizationType.F32 else np.float16)
        else:
            blob = gguf.quants.quantize(data, t)
        writer.add_tensor(name, blob, raw_dtype=t)
        types[name] = t.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def read_gguf_dequantized(path) -> dict:
    """Every tensor of a GGUF file dequantised by the ``gguf`` package's own reference code (float32)."""
    import gguf
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(v) for v in reversed(t.shape))
        out[t.name] = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).copy())
    return out


# -- LoRA ----------------------------------------------------------------------------------------------------

def lora_targets(depth: int, single: int) -> dict:
    """diffusers names of the FLUX linears a typical FLUX LoRA trains -> (out features, in features)."""
    h = LOADER_FLUX["hidden"]
    mlp = 4 * h
    t = {}
    for i in range(depth):
        p = f"transformer_blocks.{i}"
        for n in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
                  "attn.to_out.0", "attn.to_add_out"):
            t[f"{p}.{n}"] = (h, h)
        for n in ("ff.net.0.proj", "ff_context.net.0.proj"):
            t[f"{p}.{n}"] = (mlp, h)
        for n in ("ff.net.2", "ff_context.net.2"):
            t[f"{p}.{n}"] = (h, mlp)
    for i in range(single):
        p = f"single_transformer_blocks.{i}"
        for n in ("attn.to_q", "attn.to_k", "attn.to_v"):
            t[f"{p}.{n}"] = (h, h)
        t[f"{p}.proj_mlp"] = (mlp, h)
        t[f"{p}.proj_out"] = (h, h + mlp)
    return t


#: the FLUX weights the LoRA of :func:`write_lora` patches (per block), in ComfyUI's names
LORA_PATCHED = {"double": ("img_attn.qkv", "txt_attn.qkv", "img_attn.proj", "txt_attn.proj", "img_mlp.0",
                           "img_mlp.2", "txt_mlp.0", "txt_mlp.2"),
                "single": ("linear1", "linear2")}


def lora_patched_keys(depth: int, single: int) -> set:
    return ({f"diffusion_model.double_blocks.{i}.{n}.weight" for i in range(depth) for n in LORA_PATCHED["double"]}
            | {f"diffusion_model.single_blocks.{i}.{n}.weight" for i in range(single) for n in LORA_PATCHED["single"]})


def write_lora(path, seed=0, rank=4, strength=0.25) -> Path:
    """A rank-``rank`` LoRA in the diffusers/PEFT layout (``transformer.<name>.lora_A/lora_B.weight``, no alpha:
    scale 1): q/k/v land on slices of FLUX's fused qkv / linear1 (ComfyUI's offset patches). B @ A changes
    each weight by about ``strength`` of its own size."""
    import safetensors.torch
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_f, in_f) in lora_targets(LOADER_FLUX["depth"], LOADER_FLUX["single"]).items():
        a = torch.randn(rank, in_f, generator=g) / in_f ** 0.5
        b = torch.randn(out_f, rank, generator=g) * strength / rank ** 0.5
        tensors[f"transformer.{name}.lora_A.weight"] = a.to(torch.bfloat16)
        tensors[f"transformer.{name}.lora_B.weight"] = b.to(torch.bfloat16)
    path = Path(path)
    safetensors.torch.save_file(tensors, str(path))
    return path


# -- loading through ComfyUI ------------------------------------------------------------------------------------

def load_gguf_pack():
    """Load city96's ComfyUI-GGUF the way ComfyUI loads a custom node (once per process); returns its
    ``UnetLoaderGGUF`` node class."""
    import nodes
    if "UnetLoaderGGUF" in nodes.NODE_CLASS_MAPPINGS:
        return nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]
    if not (GGUF_PACK_DIR / "nodes.py").exists():
        raise RuntimeError(f"ComfyUI-GGUF not found at {GGUF_PACK_DIR} (set CLUSCA_GGUF_PACK to its folder)")
    if not asyncio.run(nodes.load_custom_node(str(GGUF_PACK_DIR))):
        raise RuntimeError(f"ComfyUI failed to load ComfyUI-GGUF from {GGUF_PACK_DIR}")
    return nodes.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]


def gguf_pack_module(name: str):
    """A submodule of the loaded GGUF pack, e.g. ``gguf_pack_module("ops")``."""
    import importlib
    load_gguf_pack()
    return importlib.import_module(str(GGUF_PACK_DIR).replace(".", "_x_") + "." + name)


@contextlib.contextmanager
def model_folders(root, kinds=("diffusion_models", "loras")):
    """Register ``root/<kind>`` with ComfyUI's ``folder_paths`` for the duration (created if missing). GGUF
    files go into ``diffusion_models`` as in a real install: ComfyUI-GGUF's ``unet_gguf`` key shares that
    folder list."""
    import folder_paths
    added = []
    try:
        for kind in kinds:
            folder = Path(root) / kind
            folder.mkdir(parents=True, exist_ok=True)
            paths = folder_paths.folder_names_and_paths.get(folder_paths.map_legacy(kind), ([],))[0]
            if str(folder) not in paths:
                folder_paths.add_model_folder_path(kind, str(folder))
                added.append((kind, str(folder)))
        yield {kind: Path(root) / kind for kind in kinds}
    finally:
        for kind, folder in added:
            paths = folder_paths.folder_names_and_paths[folder_paths.map_legacy(kind)][0]
            if folder in paths:
                paths.remove(folder)


def flux_heads_detected_right(sd: dict) -> bool:
    """Whether this ComfyUI's FLUX detection gives the tiny model its real head count (ComfyUI 0.3.75 always
    says 24 heads, newer versions hidden_size // sum(axes_dim))."""
    import comfy.model_detection
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    return cfg["num_heads"] * sum(cfg["axes_dim"]) == cfg["hidden_size"]


@contextlib.contextmanager
def flux_head_detection():
    """While loading: ComfyUI's FLUX detection with the head count hidden_size // sum(axes_dim) (the rule of
    ComfyUI 0.33's ``model_detection``; for every real FLUX.1 checkpoint, 3072 // 128 = the 24 that older
    versions assume). Changes nothing where detection already agrees; restores ComfyUI's function after."""
    import comfy.model_detection as md
    original = md.detect_unet_config

    def detect(state_dict, key_prefix, *args, **kwargs):
        cfg = original(state_dict, key_prefix, *args, **kwargs)
        if isinstance(cfg, dict) and cfg.get("image_model") == "flux" and cfg.get("axes_dim"):
            cfg["num_heads"] = cfg["hidden_size"] // sum(cfg["axes_dim"])
        return cfg

    md.detect_unet_config = detect
    try:
        yield
    finally:
        md.detect_unet_config = original
