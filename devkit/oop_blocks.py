"""An out-of-place path through ComfyUI's FLUX-style blocks, for training.

ComfyUI's ``DoubleStreamBlock`` / ``SingleStreamBlock`` (``comfy.ldm.flux.layers``, used by FLUX, FLUX.2 and
HunyuanVideo) update their inputs in place (``img += ...``), which autograd refuses once those inputs were
saved for the backward pass. :func:`training_transformer_options` returns ``transformer_options`` with one
``patches_replace["dit"]`` entry per block that computes the same block from the block's own submodules
(modulation, norms, qkv, QK-norm, ComfyUI's ``attention`` with RoPE, projections, MLPs) without modifying any
input. It is used only while training; sampling runs ComfyUI's blocks unchanged. :func:`check_equal` compares
both paths on a random input, block by block and for the whole model. Blocks built without their own
modulation (FLUX.2's global modulation) take it ready-made in ``vec``, as ComfyUI's blocks do.

Qwen-Image's and Wan's blocks (``QwenImageTransformerBlock``, ``WanAttentionBlock``) update nothing in place
(``tests/test_reference_models.py`` trains through them and checks the gradients): they need no such path.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from comfy.ldm.flux.math import attention


def _qkv(attn_module, x, heads):
    qkv = attn_module.qkv(x)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn_module.norm(q, k, v)
    return q, k, v


def double_block_forward(block, img, txt, vec, pe, attn_mask=None, transformer_options=None):
    """``DoubleStreamBlock.forward`` without in-place updates (modulation_dims not supported)."""
    to = transformer_options if transformer_options is not None else {}
    if getattr(block, "modulation", True):
        img_mod1, img_mod2 = block.img_mod(vec)
        txt_mod1, txt_mod2 = block.txt_mod(vec)
    else:                                            # global modulation: computed by the model, passed in vec
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec
    img_q, img_k, img_v = _qkv(block.img_attn, torch.addcmul(img_mod1.shift, block.img_norm1(img), 1 + img_mod1.scale),
                               block.num_heads)
    txt_q, txt_k, txt_v = _qkv(block.txt_attn, torch.addcmul(txt_mod1.shift, block.txt_norm1(txt), 1 + txt_mod1.scale),
                               block.num_heads)
    if getattr(block, "flipped_img_txt", False):   # HunyuanVideo in older ComfyUI versions
        attn = attention(torch.cat((img_q, txt_q), 2), torch.cat((img_k, txt_k), 2), torch.cat((img_v, txt_v), 2),
                         pe=pe, mask=attn_mask, transformer_options=to)
        img_attn, txt_attn = attn[:, : img.shape[1]], attn[:, img.shape[1]:]
    else:
        attn = attention(torch.cat((txt_q, img_q), 2), torch.cat((txt_k, img_k), 2), torch.cat((txt_v, img_v), 2),
                         pe=pe, mask=attn_mask, transformer_options=to)
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1]:]
    img = img + block.img_attn.proj(img_attn) * img_mod1.gate
    img = img + block.img_mlp(torch.addcmul(img_mod2.shift, block.img_norm2(img), 1 + img_mod2.scale)) * img_mod2.gate
    txt = txt + block.txt_attn.proj(txt_attn) * txt_mod1.gate
    txt = txt + block.txt_mlp(torch.addcmul(txt_mod2.shift, block.txt_norm2(txt), 1 + txt_mod2.scale)) * txt_mod2.gate
    return img, txt


def single_block_forward(block, x, vec, pe, attn_mask=None, transformer_options=None):
    """``SingleStreamBlock.forward`` without in-place updates (modulation_dims not supported; not the yak MLP)."""
    if getattr(block, "yak_mlp", False):
        raise NotImplementedError("the out-of-place training path does not handle the yak MLP")
    to = transformer_options if transformer_options is not None else {}
    mod = block.modulation(vec)[0] if getattr(block, "modulation", None) is not None else vec
    qkv, mlp = torch.split(block.linear1(torch.addcmul(mod.shift, block.pre_norm(x), 1 + mod.scale)),
                           [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = block.norm(q, k, v)
    attn = attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=to)
    return x + block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)) * mod.gate


class OutOfPlaceBlock:
    """A ``patches_replace["dit"]`` entry running one block out of place. ``mask_key`` is the args key of
    the attention mask: ``attn_mask`` (FLUX) or ``attention_mask`` (HunyuanVideo)."""

    def __init__(self, block, kind: str, mask_key: str):
        self.block, self.kind, self.mask_key = block, kind, mask_key

    def __call__(self, args: dict, extra: dict) -> dict:
        for key in ("modulation_dims", "modulation_dims_img", "modulation_dims_txt"):
            if args.get(key) is not None:
                raise NotImplementedError("the out-of-place training path does not handle modulation_dims")
        to = args.get("transformer_options")
        if self.kind == "double_block":
            img, txt = double_block_forward(self.block, args["img"], args["txt"], args["vec"], args["pe"],
                                            args.get(self.mask_key), to)
            return {"img": img, "txt": txt}
        return {"img": single_block_forward(self.block, args["img"], args["vec"], args["pe"],
                                            args.get(self.mask_key), to)}


def mask_key(diffusion_model) -> str:
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    return "attention_mask" if isinstance(diffusion_model, HunyuanVideo) else "attn_mask"


def training_patches(diffusion_model) -> dict:
    """{("double_block", i) / ("single_block", i): OutOfPlaceBlock} for every block of a FLUX-style model."""
    mk = mask_key(diffusion_model)
    patches = {("double_block", i): OutOfPlaceBlock(b, "double_block", mk) for i, b in enumerate(diffusion_model.double_blocks)}
    patches.update({("single_block", i): OutOfPlaceBlock(b, "single_block", mk)
                    for i, b in enumerate(diffusion_model.single_blocks)})
    return patches


@contextmanager
def training_mode():
    """ComfyUI's training switch while the block runs with gradients: newer versions (0.33) apply RoPE with
    comfy-kitchen kernels that have no backward unless ``comfy.model_management.in_training`` is set."""
    import comfy.model_management as mm
    had = hasattr(mm, "in_training")
    before = getattr(mm, "in_training", None)
    if had:
        mm.in_training = True
    try:
        yield
    finally:
        if had:
            mm.in_training = before


def training_transformer_options(diffusion_model) -> dict:
    """``transformer_options`` that route every block through its out-of-place version."""
    return {"patches_replace": {"dit": training_patches(diffusion_model)}}


def check_equal(base_model, x, sigma, model_kwargs: dict, seed: int = 0, atol: float = 1e-5) -> dict:
    """Compare the out-of-place path with ComfyUI's blocks: every block on random inputs of the model's
    shapes, and ``base_model.apply_model`` on ``x`` with and without the patches. Returns the max abs
    differences; raises AssertionError when one exceeds ``atol``."""
    dm = base_model.diffusion_model
    g = torch.Generator().manual_seed(seed)
    d = dm.hidden_size
    b, n_img, n_txt = 2, 24, 5
    n_pe = n_img + n_txt
    ids = torch.randint(0, 8, (b, n_pe, len(dm.params.axes_dim)), generator=g).float()
    pe = dm.pe_embedder(ids)
    vec = torch.randn(b, d, generator=g)
    diffs = {}
    with torch.no_grad():
        double_vec, single_vec = vec, vec
        if getattr(dm.params, "global_modulation", False):     # FLUX.2: the model computes the modulations
            double_vec = (dm.double_stream_modulation_img(vec), dm.double_stream_modulation_txt(vec))
            single_vec = dm.single_stream_modulation(vec)[0]
        for i, block in enumerate(dm.double_blocks):
            img, txt = torch.randn(b, n_img, d, generator=g), torch.randn(b, n_txt, d, generator=g)
            ref_img, ref_txt = block(img=img.clone(), txt=txt.clone(), vec=double_vec, pe=pe)
            oop_img, oop_txt = double_block_forward(block, img, txt, double_vec, pe)
            diffs[f"double_block {i}"] = max(float((ref_img - oop_img).abs().max()), float((ref_txt - oop_txt).abs().max()))
        for i, block in enumerate(dm.single_blocks):
            xs = torch.randn(b, n_pe, d, generator=g)
            ref = block(xs.clone(), vec=single_vec, pe=pe)
            diffs[f"single_block {i}"] = float((ref - single_block_forward(block, xs, single_vec, pe)).abs().max())
        ref = base_model.apply_model(x, sigma, **model_kwargs)
        oop = base_model.apply_model(x, sigma, transformer_options=training_transformer_options(dm), **model_kwargs)
        diffs["apply_model"] = float((ref - oop).abs().max())
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise AssertionError(f"out-of-place training path differs from ComfyUI's blocks: {bad}")
    return diffs
