"""Full and cached runs of ComfyUI's FLUX-style blocks (``comfy.ldm.flux.layers``).

FLUX and HunyuanVideo both use ``DoubleStreamBlock`` / ``SingleStreamBlock``; their adapters call these
helpers with the block they own. A full step runs ComfyUI's block (``original_block``) and captures the
branch outputs with forward hooks on the branch submodules. A cached step runs no attention: it recomputes
the modulation from the current ``vec``, adds the Taylor forecast of each branch through the block's own
gates, and refreshes the MLP branch on one representative token per cluster with the block's own
``norm2``/``mlp``. The first full call of each run also checks, block by block, that the captured branches
and gates add up to what ComfyUI's block returned; if they do not (a ComfyUI change this version does not
know), caching is switched off for the run and the model runs unchanged.
"""

from __future__ import annotations

import torch

from .base import close_enough
from .block_steps import forecast_attn_mlp, run_full_captured

DOUBLE_BRANCHES = ("img_attn", "img_mlp", "txt_attn", "txt_mlp")


def double_branch_modules(block) -> dict:
    return {"img_attn": block.img_attn.proj, "img_mlp": block.img_mlp,
            "txt_attn": block.txt_attn.proj, "txt_mlp": block.txt_mlp}


def double_layout_ok(block) -> bool:
    names = ("img_mod", "txt_mod", "img_attn", "txt_attn", "img_mlp", "txt_mlp", "img_norm2", "txt_norm2")
    if not getattr(block, "modulation", False):
        return False
    return all(hasattr(block, n) for n in names) and hasattr(block.img_attn, "proj") and hasattr(block.txt_attn, "proj")


def single_layout_ok(block) -> bool:
    return all(hasattr(block, n) for n in ("linear2", "modulation")) and block.modulation is not None


def double_modulation(block, vec):
    img_mod1, img_mod2 = block.img_mod(vec)
    txt_mod1, txt_mod2 = block.txt_mod(vec)
    return img_mod1, img_mod2, txt_mod1, txt_mod2


def single_modulation(block, vec):
    return block.modulation(vec)[0]


def _mlp_input(norm, mod, x):
    return torch.addcmul(mod.shift, norm(x), 1 + mod.scale)


def _finite16(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float16:
        return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


def run_double_block(plan, index: int, block, args: dict, extra: dict, inner=None,
                     cluster_segments=None, is_last: bool = False) -> dict:
    key = ("double", index)
    if plan.full:
        def adds_up(saved, cap, out):
            m = double_modulation(block, args["vec"])
            img_ok = close_enough(saved["img"] + m[0].gate * cap["img_attn"] + m[1].gate * cap["img_mlp"], out["img"])
            txt_ok = close_enough(saved["txt"] + m[2].gate * cap["txt_attn"] + m[3].gate * cap["txt_mlp"], out["txt"])
            return img_ok and txt_ok

        def cluster(out):
            plan.cluster("img", out["img"], cluster_segments)
            plan.cluster("txt", out["txt"])
            if plan.config.refresh_scope == "all":
                plan.extras["last_double_out"] = (out["img"], out["txt"])

        return run_full_captured(plan, f"double block {index}", key, double_branch_modules(block), args, extra, inner,
                                 keep=("img", "txt"), adds_up=adds_up, after=cluster if is_last else None)

    img_mod1, img_mod2, txt_mod1, txt_mod2 = double_modulation(block, args["vec"])
    img = _cached_stream(plan, block.img_norm2, block.img_mlp, args["img"], img_mod1, img_mod2, key, "img")
    txt = _cached_stream(plan, block.txt_norm2, block.txt_mlp, args["txt"], txt_mod1, txt_mod2, key, "txt")
    return {"img": img, "txt": _finite16(txt)}


def _cached_stream(plan, norm2, mlp, x, mod1, mod2, key, stream):
    """The stream's output on a cached step (no attention; see ``forecast_attn_mlp``); the text stream's
    refresh propagates to cluster-mates only when ``propagate_text`` is on."""
    gamma = None if stream == "img" or plan.config.propagate_text else 0.0
    return forecast_attn_mlp(plan, x, mod1.gate, mod2.gate, key + (stream + "_attn",), key + (stream + "_mlp",),
                             stream, lambda t: mlp(_mlp_input(norm2, mod2, t)), gamma)


def run_single_block(plan, index: int, block, args: dict, extra: dict, inner=None) -> dict:
    key = ("single", index)
    split = plan.config.refresh_scope == "all" and plan.config.refresh_rule != "none"
    if plan.full:
        if index == 0 and "last_double_out" in plan.extras:
            _join_streams(plan, args["img"], *plan.extras.pop("last_double_out"))

        def adds_up(saved, cap, out):
            return close_enough(saved["img"] + single_modulation(block, args["vec"]).gate * cap["total"], out["img"])

        return run_full_captured(plan, f"single block {index}", key, {"total": block.linear2}, args, extra, inner,
                                 keep=("img",), adds_up=adds_up,
                                 record=(lambda cap: _record_single_split(plan, key, block, cap)) if split else None,
                                 inputs_of=("total",) if split else ())

    mod = single_modulation(block, args["vec"])
    x_in = args["img"]
    if not split:
        return {"img": _finite16(plan.add_forecast(x_in, mod.gate, key + ("total",)))}
    # The block is parallel: its MLP reads the block input, its attention part is forecast.
    x = plan.add_forecast(x_in, mod.gate, key + ("attn",))
    x = plan.add_refreshed_forecast(x, mod.gate, key + ("mlp",), "joint", lambda t: _single_mlp(block, mod, t),
                                    inplace=True, source=x_in)
    return {"img": _finite16(x)}


def _join_streams(plan, joint: torch.Tensor, img: torch.Tensor, txt: torch.Tensor) -> None:
    """The clusters of the single blocks' joint sequence, from the image and text clusters, in the order the
    model concatenated the streams: found from what it computed (the joint input of the first single block
    starts with the last double block's text output, or with its image output), not from the model's
    version (FLUX, and HunyuanVideo in newer ComfyUI versions, put the text first; HunyuanVideo in 0.3.75
    the image)."""
    n_img, n_txt = img.shape[1], txt.shape[1]
    if joint.shape[1] != n_img + n_txt:
        order = None
    elif torch.equal(joint[:, :n_txt], txt) and torch.equal(joint[:, n_txt:], img):
        order = ("txt", "img")
    elif torch.equal(joint[:, :n_img], img) and torch.equal(joint[:, n_img:], txt):
        order = ("img", "txt")
    else:
        order = None
    if order is None:
        plan.abandon("the single blocks' joint sequence is not the double blocks' text and image streams")
        return
    plan.join_clusters("joint", order)


def _single_mlp_part(block, act: torch.Tensor) -> torch.Tensor:
    """linear2's output for an MLP activation alone (the attention inputs zeroed; the bias included)."""
    zeros = act.new_zeros(*act.shape[:-1], block.hidden_size)
    return block.linear2(torch.cat((zeros, act), dim=-1))


def _single_mlp(block, mod, x: torch.Tensor) -> torch.Tensor:
    """The MLP half of a single-stream block for the tokens ``x`` (its own pre_norm, modulation, linear1,
    activation and linear2)."""
    h = block.linear1(torch.addcmul(mod.shift, block.pre_norm(x), 1 + mod.scale))
    return _single_mlp_part(block, block.mlp_act(h[..., 3 * block.hidden_size:]))


def _record_single_split(plan, key, block, cap) -> None:
    """Keep a single block's cached output as its attention part and its MLP part (both Taylor-forecast;
    the MLP part is refreshed on representative tokens)."""
    z = cap["total:input"]
    mlp = _single_mlp_part(block, z[..., block.hidden_size:])
    plan.record(key + ("mlp",), mlp)
    plan.record(key + ("attn",), cap["total"] - mlp)


def flux_style_flops(n_img: int, n_txt: int, hidden: int, mlp_hidden: int, n_double: int, n_single: int,
                     k_img: int, k_txt: int) -> tuple[float, float]:
    """Multiply-add FLOPs (x2) of one evaluation of the block stack, full and cached, per batch row."""
    d, hm, n = hidden, mlp_hidden, n_img + n_txt
    mod_double = 2 * (2 * d * 6 * d)
    mod_single = 2 * d * 3 * d
    attn = 4 * n * n * d
    double_full = 2 * n * (3 * d * d + d * d + 2 * d * hm) + attn + mod_double
    single_full = 2 * n * (d * (3 * d + hm) + (d + hm) * d) + attn + mod_single
    double_cached = mod_double + 2 * (k_img + k_txt) * 2 * d * hm
    single_cached = mod_single
    return (n_double * double_full + n_single * single_full,
            n_double * double_cached + n_single * single_cached)
