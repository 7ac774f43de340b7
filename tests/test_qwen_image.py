"""ClusCa on tiny Qwen-Image models through real ComfyUI (``comfy.supported_models.QwenImage``).

Qwen-Image, 2512 and Edit 2509 share one config (the ``base`` variant); Edit 2511 is ``index_timestep_zero``
by default; Layered has one latent frame per layer. ComfyUI 0.3.75 has neither the timestep-zero reference
method nor Layered: those tests skip there (``devkit.tiny_qwen_image.variant_support`` says why).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from family_checks import FamilyChecks, apply_node, last_summary, nodes
from devkit.comfy_env import pack_module
from devkit.metrics import psnr
from devkit.tiny_models import AttentionCounter, sample
from devkit.tiny_qwen_image import (qwen_image_cond, qwen_image_latent, reference_latent, tiny_qwen_controlnet,
                                    tiny_qwen_image, variant_support)

BLOCKS = 2


def needs(variant: str):
    reason = variant_support(variant)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


class TestQwenImageFamily(FamilyChecks):
    family = "Qwen-Image"
    blocks = BLOCKS

    def make_model(self, dtype=torch.float32):
        return tiny_qwen_image(0, dtype=dtype)

    def conds(self, seed, batch=1, tokens=None):
        return qwen_image_cond(seed, tokens=tokens or 8)

    def latent(self, batch=1, size=None):
        h, w = size or (16, 16)
        return qwen_image_latent(batch, h, w)

    def latent_size_pair(self):
        return (16, 16), (24, 16)


def run(model, pos=None, neg=None, steps=10, cfg=2.0, frames=1, size=(16, 16), **kw):
    pos = pos if pos is not None else qwen_image_cond(1)
    neg = neg if neg is not None else qwen_image_cond(2)
    return sample(model, pos, neg, steps=steps, cfg=cfg, latent=qwen_image_latent(1, *size, frames=frames), **kw)


def edit_conds(method=None, sizes=((8, 8),)):
    refs = [reference_latent(5 + i, *s) for i, s in enumerate(sizes)]
    return qwen_image_cond(1, references=refs, method=method), qwen_image_cond(2, references=refs, method=method)


def block_spy(calls: list):
    """A block patch installed before ClusCa (as another node would): runs the block unchanged and records
    the shapes it was called with into ``calls`` (a closure: ComfyUI 0.3.75 deep-copies patch objects when a
    model is cloned, functions stay the same)."""
    def patch(args, extra):
        calls.append((args["img"].shape, args["vec"].shape))
        return extra["original_block"](args)
    return patch


def _check_cached_edit(model, pos, neg, ref_tokens, split_expected, size=(16, 16)):
    """Caching happens on an edit call and stays close to the uncached result; attention runs only on full
    steps; the image stream's modulation was (or was not) split per token."""
    m = model.clone()
    calls = []
    m.set_model_patch_replace(block_spy(calls), "dit", "double_block", 0)
    base = run(m, pos, neg, size=size)
    img_rows, vec_rows = calls[0][0][0], calls[0][1][0]
    assert (vec_rows == 2 * img_rows) == split_expected      # the model doubled temb for timestep-zero refs
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, pos, neg, size=size)
    s = last_summary(patched)
    assert "disabled" not in s, s.get("disabled")              # the self-check accepted the (per-token) gates
    assert s["geometry"]["reference tokens"] == ref_tokens and s["cached_steps"] > 0
    assert counter.calls == s["full_steps"] * BLOCKS
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert not torch.equal(out, base)
    assert torch.equal(run(apply_node(m, fresh_interval=1), pos, neg, size=size), base)
    return s


# -- edit references ----------------------------------------------------------------------------------

def test_edit_2509_references_are_cached_with_the_image():
    """Edit 2509's default method (index): references after the target tokens, one modulation for all."""
    pos, neg = edit_conds(sizes=((8, 8), (8, 12)))
    _check_cached_edit(tiny_qwen_image(0), pos, neg, ref_tokens=16 + 24, split_expected=False)


@needs("edit_2511")
def test_edit_2511_timestep_zero_references_are_cached_with_per_token_modulation():
    pos, neg = edit_conds()
    _check_cached_edit(tiny_qwen_image(0, variant="edit_2511"), pos, neg, ref_tokens=16, split_expected=True)


@needs("edit_2511")
def test_index_timestep_zero_from_the_conditioning_at_an_odd_size():
    """The method set on the conditioning (``reference_latents_method``) on a model whose default is index;
    latent and reference sizes that are padded to the patch size (the split index counts padded tokens)."""
    pos, neg = edit_conds(method="index_timestep_zero", sizes=((7, 9),))
    _check_cached_edit(tiny_qwen_image(0), pos, neg, ref_tokens=4 * 5, split_expected=True, size=(15, 17))


def _passes_text_mask() -> bool:
    import comfy.model_base
    return "attention_mask" in inspect.getsource(comfy.model_base.QwenImage.extra_conds)


@pytest.mark.skipif(not _passes_text_mask(), reason="this ComfyUI's QwenImage does not pass a text attention_mask "
                                                     "to the model (0.3.75: extra_conds has none)")
def test_text_attention_mask():
    """Padded text tokens masked out of the joint attention (the text encoder's attention_mask)."""
    m = tiny_qwen_image(0)
    pos, neg = qwen_image_cond(1, tokens=10), qwen_image_cond(2, tokens=10)
    for c in (pos, neg):
        mask = torch.ones(1, 10, dtype=torch.long)
        mask[:, 6:] = 0
        c[0][1]["attention_mask"] = mask
    base = run(m, pos, neg)
    assert not torch.equal(base, run(m, qwen_image_cond(1, tokens=10), qwen_image_cond(2, tokens=10)))  # masked
    patched = apply_node(m)
    out = run(patched, pos, neg)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert torch.isfinite(out).all() and psnr(out, base) > 20


@pytest.mark.parametrize("method", ["index", "index_timestep_zero"])
def test_modulation_is_what_the_block_computes(method):
    """The family's modulation against ComfyUI's block on every block call of a real edit run: the image
    stream's gates rebuild the block's output from its attention and MLP outputs, and the MLP modulation (full
    and for a few representative rows: target and reference tokens) is the input the block gives ``img_mlp``.
    On 0.3.75 index_timestep_zero is unknown to the model (no split) and the check covers the plain path."""
    family = pack_module("nodes.families.qwen_image")
    m = tiny_qwen_image(0).clone()
    dm = m.model.diffusion_model
    seen = []

    def capture(i):
        def patch(args, extra):
            block = dm.transformer_blocks[i]
            st = {}
            hooks = [block.attn.to_out[0].register_forward_hook(lambda mod, a, o: st.update(attn=o)),
                     block.img_norm2.register_forward_hook(lambda mod, a, o: st.update(mid=a[0], normed=o)),
                     block.img_mlp.register_forward_hook(lambda mod, a, o: st.update(mlp_in=a[0], mlp_out=o))]
            x_in = args["img"].clone()
            try:
                out = extra["original_block"](args)
            finally:
                for h in hooks:
                    h.remove()
            seen.append((block, dict(args), x_in, out["img"], st))
            return out
        return patch

    for i in range(BLOCKS):
        m.set_model_patch_replace(capture(i), "dit", "double_block", i)
    pos, neg = edit_conds(method=method)
    run(m, pos, neg, steps=3)
    n_target = 8 * 8
    split_calls = 0
    close = dict(rtol=1e-5, atol=1e-5)
    with torch.inference_mode():      # the captured tensors are inference tensors
        for block, args, x_in, out, st in seen:
            mods = family.modulation(block, args, {"timestep_zero_index": n_target})
            attn, mlp = mods["img_attn"], mods["img_mlp"]
            split_calls += mlp.gate.shape[1] > 1
            torch.testing.assert_close(x_in + attn.gate * st["attn"], st["mid"], **close)
            torch.testing.assert_close(st["mid"] + mlp.gate * st["mlp_out"], out, **close)
            torch.testing.assert_close(mlp.modulate(st["normed"]), st["mlp_in"], **close)
            idx = torch.tensor([[0, n_target - 1, n_target, x_in.shape[1] - 1]] * x_in.shape[0])
            pick = lambda t: torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
            torch.testing.assert_close(mlp.rows(idx).modulate(pick(st["normed"])), pick(st["mlp_in"]), **close)
    split_model = method == "index_timestep_zero" and variant_support("edit_2511") is None
    assert len(seen) == 3 * BLOCKS and split_calls == (len(seen) if split_model else 0)


# -- the self-check, ControlNet, Layered ---------------------------------------------------------------

def test_layout_self_check_switches_caching_off_for_a_block_patch_that_changes_the_block(caplog):
    """Another node's block patch (installed before ClusCa, kept for full steps) changes what a block
    returns: the branches and gates no longer add up, so caching switches off and the run is exactly the
    model with that patch."""
    m = tiny_qwen_image(0).clone()

    def brighter(args, extra):
        out = extra["original_block"](args)
        return {"img": out["img"] * 1.05 + 0.01, "txt": out["txt"]}

    m.set_model_patch_replace(brighter, "dit", "double_block", 1)
    base = run(m)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    with caplog.at_level("WARNING", logger="ClusCa"):
        out = run(patched)
    s = last_summary(patched)
    assert torch.equal(out, base)
    assert counter.calls == 10 * BLOCKS and s["cached_steps"] == 0
    assert "do not add up" in s["disabled"] and "double_block 1" in s["disabled"]
    assert any("caching switched off" in r.getMessage() for r in caplog.records)


def test_a_block_patch_that_keeps_the_block_is_kept_and_caching_runs():
    """The counterpart: a patch that leaves the block as it is passes the self-check and runs on full steps."""
    m = tiny_qwen_image(0).clone()
    calls = []
    m.set_model_patch_replace(block_spy(calls), "dit", "double_block", 1)
    patched = apply_node(m)
    run(patched)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert len(calls) == s["full_steps"]


def test_controlnet_residuals_keep_working_on_cached_steps():
    """An InstantX-style ControlNet (ComfyUI's QwenImageControlNetModel and ControlNet, applied with
    ControlNetApplyAdvanced) adds its residuals to the image tokens after every block, on cached steps too."""
    m = tiny_qwen_image(0)
    cn = tiny_qwen_controlnet(m)
    hint = torch.randn(1, 16, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    apply = nodes.NODE_CLASS_MAPPINGS["ControlNetApplyAdvanced"]()
    pos, neg = apply.apply_controlnet(qwen_image_cond(1), qwen_image_cond(2), cn, hint.movedim(1, -1), 1.0, 0.0, 1.0)
    plain = run(m)
    base = run(m, pos, neg)
    assert psnr(base, plain) < 20                      # the control really changes the result
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, pos, neg)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert counter.calls == s["full_steps"] * BLOCKS    # the ControlNet's own blocks are not ClusCa's
    # close to the controlled result, far from the uncontrolled one (measured: 48 dB and 16 dB)
    assert torch.isfinite(out).all() and psnr(out, base) > 30 and psnr(out, plain) < 20
    assert torch.equal(run(apply_node(m, fresh_interval=1), pos, neg), base)


@needs("layered")
def test_layered_frames_are_cached_and_clustered_per_layer():
    m = tiny_qwen_image(0, variant="layered")
    pos, neg = edit_conds()                             # the input image as reference, negative_index
    base = run(m, pos, neg, frames=3)
    patched = apply_node(m, clusters=4, cluster_per_frame=True)
    out = run(patched, pos, neg, frames=3)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert s["geometry"]["image tokens"] == 3 * 64 and s["geometry"]["reference tokens"] == 16
    assert s["tokens_per_cached_step"]["img"] == 4 * (3 + 1)          # 3 layers + the reference segment
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    snap = patched.model_options["transformer_options"]["clusca"].last_clusters
    assert snap["grid"] == (3, 8, 8) and snap["labels"].numel() == 3 * 64


@needs("edit_2511")
def test_timestep_zero_edit_in_bfloat16():
    m = tiny_qwen_image(0, dtype=torch.bfloat16, variant="edit_2511")
    pos, neg = edit_conds()
    base = run(m, pos, neg)
    patched = apply_node(m)
    out = run(patched, pos, neg)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert torch.isfinite(out).all() and psnr(out, base) > 15
