"""ClusCa on tiny HunyuanVideo models through real ComfyUI."""

from __future__ import annotations

import torch

from family_checks import FamilyChecks, apply_node, last_summary
from devkit.metrics import psnr
from devkit.tiny_models import AttentionCounter, hunyuan_video_cond, sample, tiny_hunyuan_video

from clusca_core.schedule import build_full_step_mask

# the node's defaults on a video model take the reference video settings: interval 5, warm-up 1, K=32, γ=0.01
VIDEO_SCHEDULE = dict(warmup_steps=1, fresh_interval=5)


class TestHunyuanVideoFamily(FamilyChecks):
    family = "HunyuanVideo"
    blocks = 4
    extra_attention_per_call = 2      # the text TokenRefiner's two blocks run every call
    default_schedule = VIDEO_SCHEDULE

    def make_model(self, dtype=torch.float32):
        return tiny_hunyuan_video(0, dtype=dtype)

    def conds(self, seed, batch=1, tokens=8):
        return hunyuan_video_cond(seed, tokens=tokens or 8)

    def latent(self, batch=1, size=None):
        t, h, w = size or (3, 8, 8)
        return torch.zeros(batch, 16, t, h, w)

    def latent_size_pair(self):
        return (3, 8, 8), (5, 8, 12)


def test_defaults_become_the_reference_video_settings(caplog):
    with caplog.at_level("INFO", logger="ClusCa"):
        m = apply_node(tiny_hunyuan_video(0))
    cfg = m.model_options["transformer_options"]["clusca"].config
    assert (cfg.fresh_interval, cfg.warmup_steps, cfg.taylor_order, cfg.clusters, cfg.propagation_ratio) == (5, 1, 1, 32, 0.01)
    assert any("reference settings" in r.getMessage() for r in caplog.records)
    explicit = apply_node(tiny_hunyuan_video(0), clusters=8)
    assert explicit.model_options["transformer_options"]["clusca"].config.clusters == 8


def run(model, frames=3, size=8, steps=10, pos=None, neg=None, cfg=2.0, **kw):
    pos = pos or hunyuan_video_cond(1)
    neg = neg or hunyuan_video_cond(2)
    return sample(model, pos, neg, steps=steps, cfg=cfg, latent=torch.zeros(1, 16, frames, size, size), **kw)


# ComfyUI 0.3.75's HunyuanVideo handles text masks, ref_latent and guiding_frame_index for one batch row
# only (cond and uncond batched together fail inside the model itself), so those tests use CFG 1.


def test_cluster_per_frame_for_any_frame_count():
    m = tiny_hunyuan_video(0)
    for frames in (1, 2, 5):
        base = run(m, frames=frames)
        patched = apply_node(m, clusters=4, cluster_per_frame=True)
        out = run(patched, frames=frames)
        s = last_summary(patched)
        assert torch.isfinite(out).all() and psnr(out, base) > 20
        assert s["tokens_per_cached_step"]["img"] == 4 * frames     # K representatives per frame
        assert "disabled" not in s
        snap = patched.model_options["transformer_options"]["clusca"].last_clusters
        labels = snap["labels"]
        per_frame = labels.view(frames, -1)
        for f in range(frames):                                     # each frame has its own cluster ids
            assert set(per_frame[f].tolist()) <= set(range(4 * f, 4 * f + 4))


def test_text_tokens_have_their_own_clusters_and_refresh():
    m = apply_node(tiny_hunyuan_video(0), clusters=4)
    out = run(m, pos=hunyuan_video_cond(1, tokens=12), neg=hunyuan_video_cond(2, tokens=12))
    s = last_summary(m)
    assert s["tokens_per_cached_step"] == {"img": 4, "txt": 4}
    assert torch.isfinite(out).all()


def test_text_attention_mask():
    m = tiny_hunyuan_video(0)
    pos, neg = hunyuan_video_cond(1, mask=True), hunyuan_video_cond(2, mask=True)
    base = run(m, pos=pos, neg=neg, cfg=1.0)
    patched = apply_node(m)
    out = run(patched, pos=pos, neg=neg, cfg=1.0)
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert last_summary(patched)["cached_steps"] > 0


def test_ref_latent_tokens_are_prepended_and_cached():
    m = tiny_hunyuan_video(0)
    ref = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    pos, neg = hunyuan_video_cond(1), hunyuan_video_cond(2)
    for c in (pos, neg):
        c[0][1]["ref_latent"] = ref
    base = run(m, pos=pos, neg=neg, cfg=1.0)
    patched = apply_node(m, cluster_per_frame=True, clusters=4)
    out = run(patched, pos=pos, neg=neg, cfg=1.0)
    s = last_summary(patched)
    assert s["geometry"]["reference tokens"] == 16 and "disabled" not in s
    assert s["tokens_per_cached_step"]["img"] == 4 * 4               # reference segment + 3 frames
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    snap = patched.model_options["transformer_options"]["clusca"].last_clusters
    assert snap["labels"].numel() == 3 * 16                          # the map shows the target frames only


def test_i2v_token_replace_is_computed_in_full():
    m = tiny_hunyuan_video(0)
    pos, neg = hunyuan_video_cond(1), hunyuan_video_cond(2)
    for c in (pos, neg):
        c[0][1]["guiding_frame_index"] = 0
    base = run(m, pos=pos, neg=neg, cfg=1.0)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, pos=pos, neg=neg, cfg=1.0)
    assert torch.equal(out, base)
    assert counter.calls == 10 * (4 + 2)
    assert last_summary(patched)["cached_steps"] == 0


def test_image_model_2d_patch():
    m = tiny_hunyuan_video(0, patch=(2, 2))
    pos, neg = hunyuan_video_cond(1), hunyuan_video_cond(2)
    base = sample(m, pos, neg, steps=10, cfg=2.0, latent=torch.zeros(1, 16, 16, 16))
    patched = apply_node(m)
    out = sample(patched, pos, neg, steps=10, cfg=2.0, latent=torch.zeros(1, 16, 16, 16))
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert last_summary(patched)["full_steps"] == sum(build_full_step_mask(10, 1, 5))


def test_hunyuan_video_15_with_byt5_and_vision_tokens():
    m = tiny_hunyuan_video(0, version="1.5")
    g = torch.Generator().manual_seed(4)

    class VisionOutput:
        last_hidden_state = torch.randn(1, 5, 16, generator=g)

    def cond(seed):
        c = hunyuan_video_cond(seed, guidance=None)
        c[0][1]["conditioning_byt5small"] = torch.randn(1, 6, 1472, generator=g)
        c[0][1]["clip_vision_output"] = VisionOutput()
        return c

    pos, neg = cond(1), cond(2)
    latent = torch.zeros(1, 32, 3, 8, 8)
    base = sample(m, pos, neg, steps=10, cfg=1.0, latent=latent)
    patched = apply_node(m)
    out = sample(patched, pos, neg, steps=10, cfg=1.0, latent=latent)
    s = last_summary(patched)
    assert s["geometry"]["text tokens"] == 8 + 6 + 5                 # text + byT5 + vision tokens
    assert s["cached_steps"] > 0 and "disabled" not in s
    assert torch.isfinite(out).all() and psnr(out, base) > 20


def test_refresh_of_the_single_blocks_pairs_clusters_with_their_tokens(monkeypatch):
    """refresh_scope 'all' gives the single blocks' joint sequence the text and image clusters in the order
    the model concatenates the streams: image first in ComfyUI 0.3.75, text first in 0.33. The
    order is found from what the blocks compute, so caching runs and the joint labels line up either way."""
    from devkit.comfy_env import comfyui_version, pack_module
    slots = pack_module("clusca_core.plan")
    config = pack_module("clusca_core.config").ClusCaConfig(refresh_scope="all", clusters=4)
    joined = []
    real_join = slots.CallPlan.join_clusters

    def spy(plan, stream, parts):
        real_join(plan, stream, parts)
        slot = plan.slots[0]
        joined.append((tuple(parts), slot.clusters["img"].labels.clone(), slot.clusters["txt"].labels.clone(),
                       slot.clusters[stream].labels.clone()))

    monkeypatch.setattr(slots.CallPlan, "join_clusters", spy)
    base_model = tiny_hunyuan_video(0)
    m = pack_module("nodes.patching").apply_clusca(base_model, config)
    out = run(m, steps=10)
    base = run(base_model, steps=10)
    s = last_summary(m)
    assert s["cached_steps"] > 0 and "disabled" not in s
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    expected = ("img", "txt") if comfyui_version() == "0.3.75" else ("txt", "img")
    assert joined and all(parts == expected for parts, *_ in joined)
    parts, img, txt, joint = joined[-1]
    first, second = (img, txt + 4) if expected == ("img", "txt") else (txt, img + 4)
    assert torch.equal(joint, torch.cat((first, second), dim=1))
