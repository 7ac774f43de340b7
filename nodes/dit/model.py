"""DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023) for ComfyUI.

A class-conditional latent diffusion transformer: the latent is cut into p x p patches (a strided conv),
fixed 2-D sin-cos position embeddings are added, and a stack of adaLN-Zero blocks runs on the tokens. Every
block is conditioned on ``c = timestep embedding + class-label embedding`` through six modulation vectors
(shift, scale and gate of the attention branch, then of the MLP branch). The final layer predicts noise
(eps) and, with learned sigma, the variance interpolation as 4 more channels that ComfyUI does not use.

Parameter names are those of the official checkpoints (``x_embedder.proj``, ``t_embedder.mlp.0``,
``y_embedder.embedding_table``, ``pos_embed``, ``blocks.N.attn.qkv`` ...), so their state dicts load as they
are. Layers come from ComfyUI's ``operations`` (``comfy.ops``) and attention from ``optimized_attention``, as
in ComfyUI's own models, so weight casting, offloading, LoRA patches and attention overrides apply.

ComfyUI hooks: ``forward`` runs the ``DIFFUSION_MODEL`` wrappers; the block loop honours
``transformer_options["patches_replace"]["dit"][("double_block", i)]`` (ComfyUI's key for the blocks of
single-stream models) with ``{"img", "vec", "transformer_options"}`` in and ``{"img"}`` out. Blocks never
modify their input tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import comfy.ldm.common_dit
import comfy.ops
import comfy.patcher_extension
from comfy.ldm.modules.attention import optimized_attention
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

from .labels import NO_CLASS

#: dimension of the sinusoidal timestep features fed to the timestep MLP
FREQUENCY_EMBEDDING_SIZE = 256


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens ``x`` (B, N, D) with per-row ``shift``/``scale`` (B, D): x * (1 + scale) + shift."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


def _axis_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """sin/cos encoding of 1-D positions into ``dim`` channels: sin(pos * w_i) then cos(pos * w_i),
    w_i = 10000^(-i / (dim/2))."""
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed(dim: int, rows: int, cols: int) -> torch.Tensor:
    """DiT's fixed 2-D position embedding of a ``rows`` x ``cols`` token grid, (rows * cols, dim) float32, tokens
    in row-major order. The first half of the channels encodes the column, the second half the row (the
    layout of the table stored in the official checkpoints)."""
    if dim % 4 != 0:
        raise ValueError(f"the hidden size must be a multiple of 4 for 2-D sin-cos embeddings; got {dim}")
    col = _axis_encoding(torch.arange(cols), dim // 2)          # (cols, dim/2)
    row = _axis_encoding(torch.arange(rows), dim // 2)          # (rows, dim/2)
    grid = torch.cat([col[None, :, :].expand(rows, cols, -1), row[:, None, :].expand(rows, cols, -1)], dim=-1)
    return grid.reshape(rows * cols, dim).to(torch.float32)


class PatchEmbed(nn.Module):
    """p x p patches of the latent to tokens: a conv with stride p, then (B, N, D) in row-major order."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.proj = operations.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size,
                                      bias=True, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Timestep (0..999, may be fractional) -> sinusoidal features -> MLP (Linear, SiLU, Linear)."""

    def __init__(self, hidden_size: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.mlp = nn.Sequential(
            operations.Linear(FREQUENCY_EMBEDDING_SIZE, hidden_size, bias=True, dtype=dtype, device=device),
            nn.SiLU(),
            operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device),
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE).to(dtype))


class LabelEmbedder(nn.Module):
    """Class label -> embedding. The table has one row per class plus, for models trained with label dropout
    (the official ones), a last "null class" row: the unconditional embedding used for classifier-free
    guidance. A model trained without label dropout has no null row (``has_null_class`` False); the label
    ``NO_CLASS`` (-1) then gets a zero class embedding (its prediction is not used: see ``labels.py``)."""

    def __init__(self, num_classes: int, hidden_size: int, has_null_class: bool = True, dtype=None, device=None,
                 operations=None):
        super().__init__()
        self.num_classes = num_classes
        self.has_null_class = bool(has_null_class)
        self.embedding_table = operations.Embedding(num_classes + int(self.has_null_class), hidden_size, dtype=dtype,
                                                    device=device)

    @property
    def null_class(self) -> int:
        """The label of "no class": the null row, or ``NO_CLASS`` when the table has none."""
        return self.num_classes if self.has_null_class else NO_CLASS

    def forward(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.has_null_class:
            return self.embedding_table(labels, out_dtype=dtype).to(dtype)
        known = labels >= 0
        emb = self.embedding_table(torch.where(known, labels, torch.zeros_like(labels)), out_dtype=dtype).to(dtype)
        return emb * known.unsqueeze(-1).to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv projection (q, k, v each head-major), attention, output projection."""

    def __init__(self, dim: int, num_heads: int, dtype=None, device=None, operations=None):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = operations.Linear(dim, dim * 3, bias=True, dtype=dtype, device=device)
        self.proj = operations.Linear(dim, dim, bias=True, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, transformer_options={}) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = optimized_attention(q, k, v, self.num_heads, transformer_options=transformer_options)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden, bias=True, dtype=dtype, device=device)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = operations.Linear(hidden, dim, bias=True, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x + gate_msa * attn(modulate(norm1(x))), then + gate_mlp * mlp(modulate(norm2(x)))."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, dtype=None, device=None,
                 operations=None):
        super().__init__()
        self.norm1 = operations.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.attn = Attention(hidden_size, num_heads, dtype=dtype, device=device, operations=operations)
        self.norm2 = operations.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), dtype=dtype, device=device, operations=operations)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(),
            operations.Linear(hidden_size, 6 * hidden_size, bias=True, dtype=dtype, device=device),
        )

    def modulation(self, c: torch.Tensor) -> tuple:
        """(shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), each (B, D)."""
        return self.adaLN_modulation(c).chunk(6, dim=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor, transformer_options={}) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(c)
        attn = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), transformer_options=transformer_options)
        x = x + gate_msa.unsqueeze(1) * attn
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a linear map of every token to its p x p x out_channels patch values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.norm_final = operations.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6, dtype=dtype,
                                               device=device)
        self.linear = operations.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True, dtype=dtype,
                                        device=device)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(),
            operations.Linear(hidden_size, 2 * hidden_size, bias=True, dtype=dtype, device=device),
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """The diffusion transformer ComfyUI's ``BaseModel`` wraps (``model.diffusion_model``).

    ``input_size`` is the latent size the checkpoint was trained at (32 for 256 px, 64 for 512 px); other
    sizes work too: their position embeddings are computed for their own token grid. ``null_class`` False:
    the label table has no null-class row (a model trained without label dropout). ``forward`` returns
    the eps prediction only (the first ``in_channels`` output channels).
    """

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0, num_classes: int = 1000,
                 learn_sigma: bool = True, null_class: bool = True, image_model=None, dtype=None, device=None,
                 operations=None, **kwargs):
        super().__init__()
        if operations is None:
            operations = comfy.ops.disable_weight_init
        self.dtype = dtype
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        ops = dict(dtype=dtype, device=device, operations=operations)
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size, **ops)
        self.t_embedder = TimestepEmbedder(hidden_size, **ops)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, null_class, **ops)
        grid = input_size // patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(hidden_size, grid, grid)[None].to(device=device),
                             persistent=True)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, **ops) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, **ops)

    def position_embedding(self, rows: int, cols: int, device, dtype) -> torch.Tensor:
        """(1, rows * cols, D): the stored table for the trained grid, computed for any other grid."""
        grid = self.input_size // self.patch_size
        if rows == grid and cols == grid and self.pos_embed.shape[1] == rows * cols:
            table = self.pos_embed
        else:
            table = sincos_pos_embed(self.hidden_size, rows, cols)[None]
        return table.to(device=device, dtype=dtype)

    def unpatchify(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(B, N, p*p*C) tokens back to a (B, C, rows*p, cols*p) latent."""
        p, c = self.patch_size, self.out_channels
        x = x.reshape(x.shape[0], rows, cols, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, rows * p, cols * p)

    def forward(self, x, timestep, context=None, y=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward,
            self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, y, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context=None, y=None, control=None, transformer_options={}, **kwargs):
        """``context`` and ``control`` are accepted for ComfyUI's calling convention and not used: DiT is
        conditioned on the class labels ``y`` only (None = the null class, i.e. unconditional)."""
        batch, _, height, width = x.shape
        p = self.patch_size
        img = comfy.ldm.common_dit.pad_to_patch_size(x, (p, p))
        rows, cols = img.shape[-2] // p, img.shape[-1] // p
        tokens = self.x_embedder(img)
        tokens = tokens + self.position_embedding(rows, cols, tokens.device, tokens.dtype)
        if y is None:
            y = torch.full((batch,), self.y_embedder.null_class, dtype=torch.long, device=x.device)
        c = self.t_embedder(timestep, tokens.dtype) + self.y_embedder(y.to(x.device), tokens.dtype)

        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        transformer_options["total_blocks"] = len(self.blocks)
        transformer_options["block_type"] = "double"
        for i, block in enumerate(self.blocks):
            transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    return {"img": block(args["img"], args["vec"], transformer_options=args["transformer_options"])}
                out = blocks_replace[("double_block", i)](
                    {"img": tokens, "vec": c, "transformer_options": transformer_options},
                    {"original_block": block_wrap})
                tokens = out["img"]
            else:
                tokens = block(tokens, c, transformer_options=transformer_options)

        out = self.unpatchify(self.final_layer(tokens, c), rows, cols)[:, :, :height, :width]
        return out[:, :self.in_channels] if self.learn_sigma else out


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: DiT) -> str:
    """A short human description, e.g. 'DiT depth 28, hidden 1152, 16 heads, patch 2, 256 px'."""
    px = model.input_size * 8
    return (f"DiT depth {len(model.blocks)}, hidden {model.hidden_size}, {model.num_heads} heads, "
            f"patch {model.patch_size}, {px} px, {math.ceil(num_parameters(model) / 1e6)} M parameters")
