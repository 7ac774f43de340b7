"""ClusCa on tiny Wan 2.1 / 2.2 models (T2V, I2V, TI2V-5B, VACE, Camera, Animate) through real ComfyUI."""

from __future__ import annotations

import torch

from family_checks import FamilyChecks, apply_node, last_summary, nodes
from devkit.metrics import psnr
from devkit.tiny_models import AttentionCounter
from devkit.tiny_wan import ksample, ti2v_latent, tiny_wan, wan_cond

from clusca_core.schedule import build_full_step_mask

STEPS = 10
FULL = sum(build_full_step_mask(STEPS, 3, 5))      # the node's defaults (Wan has no reference settings)


class TestWanFamily(FamilyChecks):
    family = "Wan"
    blocks = 4          # 2 blocks, each with a self-attention and a cross-attention call

    def make_model(self, dtype=torch.float32):
        return tiny_wan("t2v", 0, dtype=dtype)

    def conds(self, seed, batch=1, tokens=8):
        return wan_cond(seed, tokens=tokens or 8, batch=batch)

    def latent(self, batch=1, size=None):
        return torch.zeros(batch, 16, *(size or (3, 8, 8)))

    def latent_size_pair(self):
        return (3, 8, 8), (5, 8, 12)


def run(model, kind="t2v", frames=3, size=(8, 8), latent=None, **kw):
    pos, neg = wan_cond(1, kind=kind, frames=frames, size=size), wan_cond(2, kind=kind, frames=frames, size=size)
    if latent is None:
        latent = torch.zeros(1, 16, frames, *size)
    return ksample(model, pos, neg, latent, steps=STEPS, **kw)


def check_caches(model, kind, attention_per_full_call, attention_per_call=0, min_psnr=25.0, **kw):
    """Interval 1 is the model exactly; the defaults cache as scheduled (attention counted: none in the cached
    blocks), stay finite and close, and pass the layout self-check (not disabled)."""
    base = run(model, kind, **kw)
    assert torch.equal(run(apply_node(model, fresh_interval=1), kind, **kw), base)
    patched = apply_node(model)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, kind, **kw)
    s = last_summary(patched)
    assert "disabled" not in s and (s["full_steps"], s["cached_steps"]) == (FULL, STEPS - FULL)
    assert counter.calls == FULL * attention_per_full_call + STEPS * attention_per_call
    assert torch.isfinite(out).all() and psnr(out, base) > min_psnr and not torch.equal(out, base)
    return s


def test_ti2v_per_frame_timesteps_are_cached_with_per_token_modulation():
    """Wan 2.2 TI2V-5B: the kept first frame (noise mask) gives the model one timestep per latent frame, so
    each token has its own modulation. The layout self-check compares the adapter's modulation with what the
    block computed (a per-row modulation would not add up and switch caching off)."""
    m = tiny_wan("ti2v", 0)
    seen = []
    hook = m.model.diffusion_model.register_forward_pre_hook(lambda mod, args: seen.append(args[1].clone()))
    try:
        latent, mask = ti2v_latent()
        s = check_caches(m, "ti2v", 4, latent=latent, noise_mask=mask, min_psnr=30.0)
    finally:
        hook.remove()
    t = seen[0]
    assert t.shape == (2, 3) and (t[:, 0] == 0).all() and (t[:, 1:] > 0).all()    # cond + uncond, 3 frames
    assert s["family"] == "Wan" and s["tokens_per_cached_step"] == {"img": 16}


def test_refresh_is_the_blocks_ffn_for_the_representatives_with_per_token_modulation():
    """The FFN refresh (norm2, the per-token modulation gathered at the drawn tokens, ffn) gives exactly what
    ComfyUI's block computed for those tokens, on a real TI2V call with one timestep per frame."""
    from devkit.comfy_env import pack_module
    wan, runner = pack_module("nodes.families.wan"), pack_module("nodes.adapters.runner")
    m = tiny_wan("ti2v", 0)
    calls = []

    def recorder(args, extra):
        calls.append(dict(args))
        return extra["original_block"](args)

    recording = m.clone()
    recording.set_model_patch_replace(recorder, "dit", "double_block", 1)
    latent, mask = ti2v_latent()
    ksample(recording, wan_cond(1), wan_cond(2), latent, steps=2, noise_mask=mask)
    args = calls[-1]
    block = m.model.diffusion_model.blocks[1]
    seen = {}
    hooks = [block.norm2.register_forward_pre_hook(lambda mod, a: seen.__setitem__("x", a[0])),
             block.ffn.register_forward_hook(lambda mod, a, out: seen.__setitem__("ffn", out))]
    try:
        with torch.inference_mode():
            block(args["img"], e=args["vec"], freqs=args["pe"], context=args["txt"], context_img_len=None,
                  transformer_options=args["transformer_options"])
            x, out = seen["x"], seen["ffn"]          # (the refresh below runs norm2 and ffn again)
            mods = wan.modulation(block, args, {})
            ffn = next(b for b in wan.BLOCK.streams[0].branches if b.name == "ffn")
            index = torch.tensor([[0, 5, 17, 40], [3, 16, 30, 47]])        # tokens of every frame, per row
            pick = index[..., None].expand(-1, -1, 64)
            fresh = runner._token_mlp(block, ffn, mods)(torch.gather(x, 1, pick), index)
    finally:
        for h in hooks:
            h.remove()
    assert args["vec"].shape[:2] == (2, 3) and mods["ffn"].gate.shape == (2, 48, 64)
    assert torch.allclose(fresh, torch.gather(out, 1, pick), rtol=1e-5, atol=1e-6)
    frame_mods = mods["ffn"].scale[0, ::16]                            # one modulation per frame, different
    assert not torch.allclose(frame_mods[0], frame_mods[1])


def test_ffn_is_the_error_probe():
    """The representatives' fresh FFN outputs measure the forecast error on every cached step (verbose mode
    and the error-adaptive schedule read it)."""
    patched = apply_node(tiny_wan("t2v", 0), verbose=True)
    run(patched)
    s = last_summary(patched)
    errors = [e for _, _, e in s["probe_errors"]]
    assert len(errors) == s["cached_steps"] == STEPS - FULL and all(0 < e < 10 for e in errors)


def test_i2v_with_clip_vision_context():
    """I2V: the start image enters through the input channels (no extra tokens), its CLIP-vision tokens
    through the cross-attention (one more attention call per block on full steps, none on cached ones)."""
    s = check_caches(tiny_wan("i2v", 0), "i2v", 2 * 3)
    assert s["geometry"]["image tokens"] == 3 * 4 * 4 and "reference tokens" not in s["geometry"]


def test_vace_hint_blocks_run_every_step():
    s = check_caches(tiny_wan("vace", 0), "vace", 4, attention_per_call=2)
    assert s["family"] == "Wan VACE"


def test_camera_control():
    s = check_caches(tiny_wan("camera", 0), "camera", 2 * 3)
    assert s["family"] == "Wan Camera"


def test_animate_with_a_pose_video():
    m = tiny_wan("animate", 0)
    s = check_caches(m, "animate", 2 * 3)
    assert s["family"] == "Wan Animate"
    assert not torch.equal(run(m, "animate"), run(m))           # the pose video reaches the model


def test_cluster_per_frame_for_any_frame_count():
    m = tiny_wan("t2v", 0)
    for frames in (1, 2, 5):
        base = run(m, frames=frames)
        patched = apply_node(m, clusters=4, cluster_per_frame=True)
        out = run(patched, frames=frames)
        s = last_summary(patched)
        assert torch.isfinite(out).all() and psnr(out, base) > 25
        assert s["tokens_per_cached_step"]["img"] == 4 * frames and "disabled" not in s
        labels = patched.model_options["transformer_options"]["clusca"].last_clusters["labels"]
        for f, row in enumerate(labels.view(frames, -1)):       # each frame has its own cluster ids
            assert set(row.tolist()) <= set(range(4 * f, 4 * f + 4))


def test_reference_tokens_in_the_stream_are_cached_as_their_own_segment():
    """Tokens that enter the stream beside the video: a ``reference_latent`` prepended by the reference
    convolution (Fun models with ``ref_conv``) and Phantom-style ``time_dim_concat`` frames appended."""
    g = torch.Generator().manual_seed(9)
    cases = (({"in_dim_ref_conv": 16}, {"reference_latents": [torch.randn(1, 16, 1, 8, 8, generator=g)]}),
             ({}, {"time_dim_concat": torch.randn(1, 16, 1, 8, 8, generator=g)}))
    for model_kw, extra in cases:
        m = tiny_wan("t2v", 0, **model_kw)
        pos, neg = wan_cond(1), wan_cond(2)
        for c in (pos, neg):
            c[0][1].update(extra)
        latent = torch.zeros(1, 16, 3, 8, 8)
        base = ksample(m, pos, neg, latent, steps=STEPS)
        patched = apply_node(m, clusters=4, cluster_per_frame=True)
        out = ksample(patched, pos, neg, latent, steps=STEPS)
        s = last_summary(patched)
        assert s["geometry"]["reference tokens"] == 16 and "disabled" not in s
        assert s["cached_steps"] == STEPS - FULL
        assert s["tokens_per_cached_step"]["img"] == 4 * (3 + 1)          # 3 frames + the reference segment
        assert torch.isfinite(out).all() and psnr(out, base) > 25
        assert patched.model_options["transformer_options"]["clusca"].last_clusters["labels"].numel() == 3 * 16


def two_experts(high, low, steps, split, latent):
    """The Wan 2.2 A14B workflow: the high-noise expert samples the first ``split`` steps of the schedule and
    returns the latent with its leftover noise, the low-noise expert finishes it (two KSamplerAdvanced)."""
    pos, neg = wan_cond(1), wan_cond(2)
    sampler = nodes.KSamplerAdvanced()
    with torch.inference_mode():
        mid = sampler.sample(high, "enable", 0, steps, 3.5, "euler", "simple", pos, neg, {"samples": latent},
                             0, split, "enable")[0]
        out = sampler.sample(low, "disable", 0, steps, 3.5, "euler", "simple", pos, neg, mid,
                             split, 10000, "disable")[0]
    return mid["samples"], out["samples"]


def test_wan22_two_experts_on_one_schedule():
    high, low = tiny_wan("t2v", 0), tiny_wan("t2v", 1)
    latent = torch.zeros(1, 16, 3, 8, 8)
    base_mid, base_out = two_experts(high, low, 20, 10, latent)
    ph, pl = apply_node(high), apply_node(low)
    counters = [AttentionCounter(), AttentionCounter()]
    counters[0].install(ph)
    counters[1].install(pl)
    mid, out = two_experts(ph, pl, 20, 10, latent)
    sh, sl = last_summary(ph), last_summary(pl)
    for s, counter in ((sh, counters[0]), (sl, counters[1])):
        assert s["steps"] == 10 and s["cached_steps"] > 0 and "disabled" not in s
        assert counter.calls == s["full_steps"] * 4
    assert torch.isfinite(mid).all() and torch.isfinite(out).all()
    assert psnr(mid, base_mid) > 40 and psnr(out, base_out) > 25
    # The counts measured today: each sampler's run sees only its slice (10 steps). The high-noise expert's
    # run starts at the model's largest sigma and takes the whole warm-up; the low-noise expert's run starts
    # below it, is taken for a continuation and warms up with one full step (a different model: it has no
    # cache yet), then keeps the interval: 4 + 2 = 6 full steps of 20, as one 20-step run of a single model.
    # (Before the continuation rule each run warmed up for 3 steps: [0, 1, 2, 7] twice, 8 full steps.)
    assert (sh["full_step_indices"], sl["full_step_indices"]) == ([0, 1, 2, 7], [0, 5])
    assert sum(build_full_step_mask(20, 3, 5)) == 6
