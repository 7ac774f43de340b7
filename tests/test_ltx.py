"""ClusCa on tiny LTX models through real ComfyUI: LTX-Video (both trees), the LTX-2 block layout with the
cross-attention AdaLN (0.33), per-token timesteps (an image-conditioned first frame), and the audio-video
model, which runs in full."""

from __future__ import annotations

import pytest
import torch

from family_checks import FamilyChecks, apply_node, last_summary
from devkit.metrics import psnr
from devkit.tiny_ltx import has_ltx2, image_to_video, ltx_cond, ltx_latent, sample_masked, tiny_ltxv
from devkit.tiny_models import AttentionCounter, CPU, init_weights

from clusca_core.schedule import build_full_step_mask

LAYERS = 2
ATTENTION_PER_BLOCK = 2    # attn1 (self) and attn2 (text cross-attention): both forecast on cached steps


class TestLTXVideoFamily(FamilyChecks):
    family = "LTX-Video"
    blocks = LAYERS * ATTENTION_PER_BLOCK
    ltx2 = False

    def make_model(self, dtype=torch.float32):
        return tiny_ltxv(0, dtype=dtype, ltx2=self.ltx2, layers=LAYERS)

    def conds(self, seed, batch=1, tokens=None):
        return ltx_cond(seed, tokens=tokens or 8)

    def latent(self, batch=1, size=None):
        return ltx_latent(batch, *(size or (3, 8, 8)))

    def latent_size_pair(self):
        return (3, 8, 8), (5, 8, 12)


@pytest.mark.skipif(not has_ltx2(), reason="this ComfyUI's LTX block has no cross-attention AdaLN (LTX-2)")
class TestLTX2Family(TestLTXVideoFamily):
    ltx2 = True


def test_ltx2_block_has_the_gated_cross_attention():
    if not has_ltx2():
        pytest.skip("no LTX-2 block layout in this ComfyUI")
    block = tiny_ltxv(0, ltx2=True).model.diffusion_model.transformer_blocks[0]
    assert block.cross_attention_adaln and block.scale_shift_table.shape[0] == 9


@pytest.mark.parametrize("ltx2", [False, True])
def test_per_token_timesteps_of_an_image_conditioned_first_frame(ltx2):
    """The kept first frame makes the sampler give every token its own timestep: the blocks get one
    modulation per token, and cached steps forecast through those per-token gates."""
    if ltx2 and not has_ltx2():
        pytest.skip("no LTX-2 block layout in this ComfyUI")
    m = tiny_ltxv(0, ltx2=ltx2)
    latent, mask = image_to_video(5)
    pos, neg = ltx_cond(1), ltx_cond(2)
    seen = []
    block = m.model.diffusion_model.transformer_blocks[0]
    handle = block.register_forward_pre_hook(lambda mod, a, kw: seen.append(tuple(kw["timestep"].shape)),
                                             with_kwargs=True)
    try:
        base = sample_masked(m, pos, neg, latent, mask)
        patched = apply_node(m)
        counter = AttentionCounter()
        counter.install(patched)
        seen.clear()
        out = sample_masked(patched, pos, neg, latent, mask)
    finally:
        handle.remove()
    tokens = latent.shape[2] * latent.shape[3] * latent.shape[4]
    assert seen and all(shape[:2] == (2, tokens) for shape in seen)      # cond + uncond, one per token
    s = last_summary(patched)
    full = sum(build_full_step_mask(10, 3, 5))
    assert "disabled" not in s and (s["full_steps"], s["cached_steps"]) == (full, 10 - full)
    assert counter.calls == full * LAYERS * ATTENTION_PER_BLOCK
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert not torch.equal(out, base)
    # (a forecast through gates other than each token's own would fail the layout self-check of the first
    # full step, which checks the branches and gates add up to the block's output, and switch caching off)
    # the kept frame stays the image in both (the sampler's mask), the generated frames are close
    for result in (out, base):
        assert torch.allclose(result[:, :, :1], latent[:, :, :1], atol=1e-4)


def test_audio_video_model_runs_in_full_with_a_log_line(caplog):
    import comfy.model_patcher
    import comfy.supported_models
    if not hasattr(comfy.supported_models, "LTXAV"):
        pytest.skip("this ComfyUI has no LTX-2 audio-video model")
    cfg = dict(image_model="ltxav", in_channels=16, audio_in_channels=16, cross_attention_dim=64,
               audio_cross_attention_dim=32, attention_head_dim=32, audio_attention_head_dim=16, num_attention_heads=2,
               audio_num_attention_heads=2, caption_channels=32, num_layers=1, connector_attention_head_dim=16,
               connector_num_attention_heads=2, connector_num_layers=1)
    mc = comfy.supported_models.LTXAV(cfg)
    mc.set_inference_dtype(torch.float32, None)
    base = mc.get_model({}, device=CPU)
    init_weights(base.diffusion_model, 0)
    m = comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)
    with caplog.at_level("WARNING", logger="ClusCa"):
        out = apply_node(m)
    assert out is m      # unchanged: no wrappers, no block patches
    lines = [r.getMessage() for r in caplog.records if r.name == "ClusCa"]
    assert any("LTX-2 audio-video" in line and "runs in full" in line and "passes through unchanged" in line
               for line in lines), lines


def test_guide_keyframes_are_reference_tokens():
    """A guide latent frame appended to the video (keyframe_idxs, as LTXVAddGuide makes it) is cached with the
    video as reference tokens; the geometry counts it apart."""
    m = tiny_ltxv(0)
    frames, h, w = 4, 8, 8
    latent = ltx_latent(1, frames, h, w)
    g = torch.Generator().manual_seed(7)
    latent[:, :, -1:] = torch.randn(1, 16, 1, h, w, generator=g)
    mask = torch.ones(1, 1, frames, h, w)
    mask[:, :, -1:] = 0.0
    # the guide frame's pixel coordinates: frame 0's positions (a first-frame guide), [t, y, x] x [start, end]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([torch.zeros(h * w), ys.flatten() * 32.0, xs.flatten() * 32.0], 0)
    keyframes = torch.stack([coords, coords + torch.tensor([1.0, 32.0, 32.0]).view(3, 1)], -1).unsqueeze(0)
    pos, neg = ltx_cond(1), ltx_cond(2)
    for c in (pos, neg):
        c[0][1]["keyframe_idxs"] = keyframes if _start_end() else keyframes[..., 0]
    base = sample_masked(m, pos, neg, latent, mask)
    patched = apply_node(m, cluster_per_frame=True, clusters=4)
    out = sample_masked(patched, pos, neg, latent, mask)
    s = last_summary(patched)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert s["geometry"]["reference tokens"] == h * w and s["geometry"]["image tokens"] == (frames - 1) * h * w
    assert s["tokens_per_cached_step"]["img"] == 4 * frames            # 3 video frames + the guide, 4 each
    assert torch.isfinite(out).all() and psnr(out, base) > 20


def _start_end() -> bool:
    """Whether this ComfyUI's LTX patchifier gives [start, end] pixel coordinates (0.33) or one (0.3.75)."""
    import inspect
    from comfy.ldm.lightricks.symmetric_patchifier import SymmetricPatchifier
    return "start_end" in inspect.signature(SymmetricPatchifier.__init__).parameters
