"""The pack's class-conditional DiT (model, ComfyUI integration, loader and label nodes) and ClusCa on it,
through real ComfyUI."""

from __future__ import annotations

import argparse
import collections
import logging
import math
import pathlib

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from family_checks import FamilyChecks, apply_node, last_summary, nodes
from devkit.comfy_env import pack_module
from devkit.metrics import psnr
from devkit.tiny_dit import dit_cond, null_cond, official_state_dict, tiny_dit
from devkit.tiny_models import AttentionCounter, sample

import comfy.latent_formats
import comfy.model_base
import comfy.patcher_extension
import folder_paths

dit_model = pack_module("nodes.dit.model")
dit_config = pack_module("nodes.dit.config")
dit_loader = pack_module("nodes.dit.loader")
dit_labels = pack_module("nodes.dit.labels")

CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)   # the labels of DiT's sample script


class TestDiTFamily(FamilyChecks):
    family = "DiT"
    blocks = 3
    # A different class label moves the final latent to about 24 dB; ClusCa must stay far closer than that.
    min_psnr_defaults = 40.0
    default_schedule = dict(warmup_steps=2, fresh_interval=4)   # the DiT reference settings

    def make_model(self, dtype=torch.float32):
        return tiny_dit(0, dtype=dtype)

    def conds(self, seed, batch=1, tokens=None):
        return dit_cond(CLASSES[seed % len(CLASSES)])

    def latent(self, batch=1, size=None):
        h, w = size or (16, 16)
        return torch.zeros(batch, 4, h, w)

    def latent_size_pair(self):
        return (16, 16), (24, 16)

    def run(self, model, steps=10, cfg=2.0, sampler="euler", batch=1, size=None, seed=0, pos=None, neg=None, **kw):
        """As FamilyChecks.run, with DiT's null class as the default negative (how CFG works for DiT)."""
        return super().run(model, steps=steps, cfg=cfg, sampler=sampler, batch=batch, size=size, seed=seed,
                           pos=pos, neg=neg if neg is not None else null_cond(), **kw)

    def test_split_cond_uncond_calls(self, monkeypatch):
        """Class labels always batch together; when memory is short ComfyUI evaluates cond and uncond in
        separate calls: each keeps its own cache."""
        m = self.make_model()
        base = self.run(m)
        patched = apply_node(m)
        counter = AttentionCounter()
        counter.install(patched)
        small = patched.model.memory_required
        monkeypatch.setattr(patched.model, "memory_required",
                            lambda shape, cond_shapes={}: 1e18 if shape[0] > 1 else small(shape, cond_shapes))
        out = self.run(patched)
        assert counter.calls == 2 * sum(self.schedule(10)) * self.blocks
        assert torch.isfinite(out).all() and psnr(out, base) > self.min_psnr_defaults


# -- the model ------------------------------------------------------------------------------------------

def reference_forward(sd: dict, x, t, y, heads: int, patch: int):
    """DiT written out in plain torch from the paper and the official key layout (independent of the pack's
    modules): timm-style fused qkv (B, N, 3, heads, head_dim), adaLN-Zero, learned sigma dropped."""
    hidden = sd["x_embedder.proj.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    b, c_in, h, w = x.shape
    tok = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=patch)
    tok = tok.flatten(2).transpose(1, 2) + sd["pos_embed"]
    n = tok.shape[1]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    ang = t[:, None].float() * freqs[None]
    tf = torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)
    temb = F.linear(F.silu(F.linear(tf, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    c = temb + sd["y_embedder.embedding_table.weight"][y]

    def ln_mod(v, shift, scale):
        return F.layer_norm(v, (hidden,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    for i in range(depth):
        p = f"blocks.{i}."
        mods = F.linear(F.silu(c), sd[p + "adaLN_modulation.1.weight"], sd[p + "adaLN_modulation.1.bias"]).chunk(6, 1)
        qkv = F.linear(ln_mod(tok, mods[0], mods[1]), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(b, n, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * (hidden // heads) ** -0.5, dim=-1) @ qkv[2]
        att = F.linear(att.transpose(1, 2).reshape(b, n, hidden), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        tok = tok + mods[2][:, None] * att
        mlp = F.linear(ln_mod(tok, mods[3], mods[4]), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        mlp = F.linear(F.gelu(mlp, approximate="tanh"), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        tok = tok + mods[5][:, None] * mlp
    shift, scale = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"],
                            sd["final_layer.adaLN_modulation.1.bias"]).chunk(2, 1)
    out = F.linear(ln_mod(tok, shift, scale), sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    cout = out.shape[-1] // (patch * patch)
    out = out.reshape(b, h // patch, w // patch, patch, patch, cout).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(b, cout, h, w)[:, :c_in]


def test_forward_matches_a_plain_torch_dit():
    m = tiny_dit(3)
    dm = m.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([999.0, 17.5])
    y = torch.tensor([207, 1000])
    with torch.no_grad():
        out = dm(x, t, y=y)
        ref = reference_forward(official_state_dict(m), x, t, y, heads=4, patch=2)
    assert out.shape == (2, 4, 16, 16)                    # learned sigma: ComfyUI gets eps only
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_position_embedding_is_dits_2d_sincos():
    d, rows, cols = 32, 3, 5
    emb = dit_model.sincos_pos_embed(d, rows, cols)
    q = d // 4
    expected = torch.zeros(rows * cols, d, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            for i in range(q):
                w = 10000.0 ** (-i / q)
                # first half: the column (sin then cos); second half: the row
                expected[r * cols + c, i] = math.sin(c * w)
                expected[r * cols + c, q + i] = math.cos(c * w)
                expected[r * cols + c, 2 * q + i] = math.sin(r * w)
                expected[r * cols + c, 3 * q + i] = math.cos(r * w)
    torch.testing.assert_close(emb, expected.float())
    dm = tiny_dit(0).model.diffusion_model
    torch.testing.assert_close(dm.pos_embed[0], dit_model.sincos_pos_embed(64, 8, 8))   # trained 8x8 grid
    torch.testing.assert_close(dm.position_embedding(6, 4, "cpu", torch.float32)[0],
                               dit_model.sincos_pos_embed(64, 6, 4))


def test_blocks_honour_dit_block_replaces_without_touching_their_input():
    m = tiny_dit(0)
    base = sample(m, dit_cond(207), null_cond(), steps=4, cfg=2.0, channels=4)
    patched = m.clone()
    seen = []

    def replace(args, extra):
        assert set(args) == {"img", "vec", "transformer_options"}
        before = args["img"].clone()
        out = extra["original_block"](args)
        assert torch.equal(args["img"], before)         # the block did not modify its input in place
        seen.append(args["transformer_options"]["block_index"])
        return {"img": out["img"]}

    for i in range(3):
        patched.set_model_patch_replace(replace, "dit", "double_block", i)
    out = sample(patched, dit_cond(207), null_cond(), steps=4, cfg=2.0, channels=4)
    assert torch.equal(out, base)
    assert seen == [0, 1, 2] * 4


def test_diffusion_model_wrappers_run_around_forward():
    m = tiny_dit(0).clone()
    calls = []

    def wrapper(executor, *args, **kwargs):
        calls.append(type(executor.class_obj).__name__)
        return executor(*args, **kwargs)

    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", wrapper)
    sample(m, dit_cond(207), null_cond(), steps=5, cfg=2.0, channels=4)
    assert calls == ["DiT"] * 5


def test_comfyui_model_integration():
    """EPS prediction, SD 1.x latents, and DiT's betas: linear in beta from 1e-4 to 0.02 over 1000 steps."""
    model = tiny_dit(0).model
    assert isinstance(model, comfy.model_base.BaseModel) and model.model_type == comfy.model_base.ModelType.EPS
    assert isinstance(model.latent_format, comfy.latent_formats.SD15) and model.latent_format.scale_factor == 0.18215
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    expected = np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)
    np.testing.assert_allclose(model.model_sampling.sigmas.double().numpy(), expected, rtol=1e-6)
    # ComfyUI's "linear" (SD's schedule, linear in sqrt(beta)) is a different schedule
    sqrt_linear = np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, 1000) ** 2
    assert not np.allclose(sqrt_linear, betas, rtol=1e-3)


def test_ksampler_node_with_the_label_node():
    label = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTClassLabel"]
    pos, neg = label.execute(class_index=360, class_name="").result
    m = tiny_dit(0)
    latent = {"samples": torch.zeros(1, 4, 16, 16)}
    with torch.inference_mode():
        (out,) = nodes.KSampler().sample(apply_node(m), 1, 6, 4.0, "euler", "normal", pos, neg, latent)
        (base,) = nodes.KSampler().sample(m, 1, 6, 4.0, "euler", "normal", pos, neg, latent)
        (other,) = nodes.KSampler().sample(m, 1, 6, 4.0, "euler", "normal", dit_cond(88), neg, latent)
    assert out["samples"].shape == (1, 4, 16, 16) and torch.isfinite(out["samples"]).all()
    assert psnr(out["samples"], base["samples"]) > psnr(other["samples"], base["samples"]) + 10


def test_combined_class_conditionings_and_other_label_layouts():
    m = apply_node(tiny_dit(0))
    both = nodes.ConditioningCombine().combine(dit_cond(207), dit_cond(360))[0]
    out = sample(m, both, null_cond(), steps=6, cfg=2.0, channels=4)
    assert torch.isfinite(out).all() and last_summary(m)["cached_steps"] > 0
    # other DiT node packs put the label itself in the tensor slot: accepted as well
    legacy = [[torch.tensor([207]), {}]]
    torch.testing.assert_close(sample(tiny_dit(0), legacy, null_cond(), steps=3, cfg=2.0, channels=4),
                               sample(tiny_dit(0), dit_cond(207), null_cond(), steps=3, cfg=2.0, channels=4))


def test_text_conditioning_is_refused_with_a_clear_error():
    text = [[torch.randn(1, 8, 64), {"pooled_output": torch.randn(1, 32)}]]
    with pytest.raises(ValueError, match="class labels, not text"):
        sample(tiny_dit(0), text, null_cond(), steps=2, cfg=2.0, channels=4)


def test_layout_self_check_switches_caching_off():
    m = tiny_dit(0)
    lin = m.model.diffusion_model.blocks[1].adaLN_modulation[1]
    state = {"n": 0}

    def drifting(_module, _inputs, output):
        state["n"] += 1       # every call gives other gates: the block and the adapter's recomputation disagree
        return output * (1.0 + 0.5 * state["n"])

    handle = lin.register_forward_hook(drifting)
    try:
        patched = apply_node(m)
        counter = AttentionCounter()
        counter.install(patched)
        out = sample(patched, dit_cond(207), null_cond(), steps=8, cfg=2.0, channels=4)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()
    assert counter.calls == 8 * 3
    assert "do not add up" in last_summary(patched)["disabled"]


def test_lite_memory_mode():
    """TaylorSeer-Lite: only the block stack's output is cached; cached steps run no block at all."""
    m = tiny_dit(0)
    base = sample(m, dit_cond(207), null_cond(), steps=10, cfg=2.0, channels=4)
    patched = apply_node(m, memory_mode="lite")
    counter = AttentionCounter()
    counter.install(patched)
    out = sample(patched, dit_cond(207), null_cond(), steps=10, cfg=2.0, channels=4)
    s = last_summary(patched)
    assert s["cached_steps"] > 0 and counter.calls == s["full_steps"] * 3 and "disabled" not in s
    assert torch.isfinite(out).all() and psnr(out, base) > 35


def test_reference_settings_apply_at_node_defaults_only():
    m = tiny_dit(0)
    cfg = apply_node(m).model_options["transformer_options"]["clusca"].config
    assert (cfg.fresh_interval, cfg.warmup_steps, cfg.taylor_order) == (4, 2, 4)
    cfg = apply_node(m, fresh_interval=6).model_options["transformer_options"]["clusca"].config
    assert (cfg.fresh_interval, cfg.warmup_steps, cfg.taylor_order) == (6, 3, 1)


def test_bfloat16_model():
    m = tiny_dit(0, dtype=torch.bfloat16)
    base = sample(m, dit_cond(207), null_cond(), steps=8, cfg=2.0, channels=4)
    out = sample(apply_node(m), dit_cond(207), null_cond(), steps=8, cfg=2.0, channels=4)
    assert torch.isfinite(out).all() and psnr(out, base) > 40
    assert torch.equal(sample(apply_node(m, fresh_interval=1), dit_cond(207), null_cond(), steps=8, cfg=2.0,
                              channels=4), base)


# -- the loader ---------------------------------------------------------------------------------------

def official_shapes(depth, hidden, patch, input_size, learn_sigma=True, classes=1000, mlp_ratio=4.0):
    """A state dict of the official key layout with the shapes of the given size (meta tensors, no memory)."""
    def t(*shape):
        return torch.empty(shape, device="meta")
    out_ch = 8 if learn_sigma else 4
    mh = int(hidden * mlp_ratio)
    sd = {"x_embedder.proj.weight": t(hidden, 4, patch, patch), "x_embedder.proj.bias": t(hidden),
          "t_embedder.mlp.0.weight": t(hidden, 256), "t_embedder.mlp.0.bias": t(hidden),
          "t_embedder.mlp.2.weight": t(hidden, hidden), "t_embedder.mlp.2.bias": t(hidden),
          "y_embedder.embedding_table.weight": t(classes + 1, hidden),
          "pos_embed": t(1, (input_size // patch) ** 2, hidden),
          "final_layer.linear.weight": t(patch * patch * out_ch, hidden), "final_layer.linear.bias": t(patch * patch * out_ch),
          "final_layer.adaLN_modulation.1.weight": t(2 * hidden, hidden),
          "final_layer.adaLN_modulation.1.bias": t(2 * hidden)}
    for i in range(depth):
        for name, shape in (("attn.qkv", (3 * hidden, hidden)), ("attn.proj", (hidden, hidden)),
                            ("mlp.fc1", (mh, hidden)), ("mlp.fc2", (hidden, mh)),
                            ("adaLN_modulation.1", (6 * hidden, hidden))):
            sd[f"blocks.{i}.{name}.weight"] = t(*shape)
            sd[f"blocks.{i}.{name}.bias"] = t(shape[0])
    return sd


@pytest.mark.parametrize("name,depth,hidden,heads,patch,input_size", [
    ("XL", 28, 1152, 16, 2, 32), ("XL", 28, 1152, 16, 2, 64), ("L", 24, 1024, 16, 4, 32),
    ("B", 12, 768, 12, 8, 32), ("S", 12, 384, 6, 2, 32),
])
def test_size_inference_of_the_published_sizes(name, depth, hidden, heads, patch, input_size):
    cfg = dit_loader.infer_unet_config(official_shapes(depth, hidden, patch, input_size), "DiT.pt")
    assert (cfg["depth"], cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"], cfg["input_size"]) == \
        (depth, hidden, heads, patch, input_size)
    assert cfg["learn_sigma"] and cfg["num_classes"] == 1000 and cfg["in_channels"] == 4 and cfg["mlp_ratio"] == 4.0
    assert dit_config.architecture_name(depth, hidden, patch) == f"DiT-{name}/{patch}"


def test_size_inference_of_other_sizes():
    cfg = dit_loader.infer_unet_config(official_shapes(3, 512, 2, 16, learn_sigma=False, classes=10), "x")
    assert (cfg["num_heads"], cfg["learn_sigma"], cfg["num_classes"], cfg["input_size"]) == (8, False, 10, 16)
    assert dit_config.heads_for_hidden(360) == 5       # not a multiple of 64: heads of 72 channels, as XL
    assert dit_config.heads_for_hidden(100) == 1
    sd = official_shapes(2, 128, 2, 16)
    del sd["pos_embed"]
    assert dit_loader.infer_unet_config(sd, "x")["input_size"] == 32     # no position table: 256 px assumed


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    try:
        yield folder
    finally:
        folder_paths.folder_names_and_paths["diffusion_models"][0].remove(str(folder))


def _checkpoint_model():
    # hidden 128 gives 2 heads by the loader's rule (hidden // 64), so the file round-trips exactly
    return tiny_dit(7, hidden=128, heads=2, depth=2)


def test_loader_reads_official_pt_and_safetensors(model_folder):
    src = _checkpoint_model()
    sd = official_state_dict(src)
    torch.save(sd, model_folder / "DiT-tiny.pt")
    safetensors.torch.save_file(sd, str(model_folder / "DiT-tiny.safetensors"))
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "ema": {"module." + k: v for k, v in sd.items()}},
               model_folder / "DiT-tiny-train.pt")
    loader = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"]
    spec = loader.INPUT_TYPES()["required"]["ckpt_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {"DiT-tiny.pt", "DiT-tiny.safetensors", "DiT-tiny-train.pt"} <= set(options)
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([500.0]), torch.tensor([3])
    with torch.no_grad():
        expected = src.model.diffusion_model(x, t, y=y)
        for name in ("DiT-tiny.pt", "DiT-tiny.safetensors", "DiT-tiny-train.pt"):
            m = loader.execute(ckpt_name=name, weight_dtype="fp32").result[0]
            dm = m.model.diffusion_model
            assert type(dm) is dit_model.DiT and isinstance(m.model, dit_config.DiTModel)
            assert (len(dm.blocks), dm.hidden_size, dm.num_heads, dm.patch_size, dm.input_size) == (2, 128, 2, 2, 16)
            assert torch.equal(dm(x, t, y=y), expected), name
    out = sample(apply_node(m), dit_cond(207), null_cond(), steps=6, cfg=2.0, channels=4)
    assert torch.isfinite(out).all()
    half = loader.execute(ckpt_name="DiT-tiny.safetensors", weight_dtype="fp16").result[0]
    assert half.model.diffusion_model.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert torch.isfinite(sample(half, dit_cond(207), null_cond(), steps=3, cfg=2.0, channels=4)).all()


def test_loader_finds_checkpoints_folder(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    safetensors.torch.save_file(official_state_dict(_checkpoint_model()), str(folder / "dit-in-checkpoints.safetensors"))
    folder_paths.add_model_folder_path("checkpoints", str(folder))
    try:
        assert dit_loader.resolve_checkpoint("dit-in-checkpoints.safetensors") == str(folder / "dit-in-checkpoints.safetensors")
        with pytest.raises(FileNotFoundError, match="not found"):
            dit_loader.resolve_checkpoint("nope.pt")
    finally:
        folder_paths.folder_names_and_paths["checkpoints"][0].remove(str(folder))


def test_malformed_checkpoints_give_clear_errors(model_folder):
    sd = official_state_dict(_checkpoint_model())
    broken = {k: v for k, v in sd.items() if k not in ("blocks.1.mlp.fc2.weight", "y_embedder.embedding_table.weight")}
    safetensors.torch.save_file(broken, str(model_folder / "broken.safetensors"))
    loader = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"]
    with pytest.raises(ValueError) as err:
        loader.execute(ckpt_name="broken.safetensors", weight_dtype="fp32")
    msg = str(err.value)
    assert "broken.safetensors" in msg and "2 required keys are missing" in msg
    assert "blocks.1.mlp.fc2.weight" in msg and "y_embedder.embedding_table.weight" in msg

    safetensors.torch.save_file({"some.other.weight": torch.zeros(2)}, str(model_folder / "not-dit.safetensors"))
    with pytest.raises(ValueError, match=r"not-dit\.safetensors.*no transformer blocks.*x_embedder\.proj\.weight"):
        loader.execute(ckpt_name="not-dit.safetensors", weight_dtype="fp32")

    wrong = dict(sd)
    wrong["blocks.0.mlp.fc2.weight"] = torch.zeros(128, 100)
    safetensors.torch.save_file(wrong, str(model_folder / "wrong-shape.safetensors"))
    with pytest.raises(ValueError, match=r"wrong-shape\.safetensors.*blocks\.0\.mlp\.fc2\.weight"):
        loader.execute(ckpt_name="wrong-shape.safetensors", weight_dtype="fp32")


class TrainingState(collections.OrderedDict):
    """An OrderedDict subclass with code: unpickling it would run this module's code."""

    def __setstate__(self, state):   # pragma: no cover - must never run
        raise AssertionError("the loader ran code from a checkpoint")


def train_py_args(num_classes=1000) -> argparse.Namespace:
    """The command line the official DiT train.py stores under "args" (its options, as its parser gives them)."""
    parser = argparse.ArgumentParser()
    for name, kind, default in (("--data-path", str, None), ("--results-dir", str, "results"),
                                ("--model", str, "DiT-XL/2"), ("--image-size", int, 256),
                                ("--num-classes", int, 1000), ("--epochs", int, 1400),
                                ("--global-batch-size", int, 256), ("--global-seed", int, 0), ("--vae", str, "ema"),
                                ("--num-workers", int, 4), ("--log-every", int, 100), ("--ckpt-every", int, 50_000)):
        parser.add_argument(name, type=kind, default=default)
    return parser.parse_args(["--data-path", "/data/imagenet/train", "--num-classes", str(num_classes)])


def train_py_checkpoint(ema_sd: dict, model_sd: dict, num_classes=1000) -> dict:
    """A checkpoint as DiT's train.py writes it: model and EMA weights, the AdamW state, and args."""
    param = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.AdamW([param], lr=1e-4, weight_decay=0)
    param.grad = torch.ones(4)
    opt.step()
    return {"model": model_sd, "ema": ema_sd, "opt": opt.state_dict(), "args": train_py_args(num_classes)}


def test_loader_reads_official_train_py_checkpoints_using_ema(model_folder):
    """train.py's checkpoints hold args as an argparse.Namespace: allowed for that load; the EMA weights are
    used (as DiT's sample.py does), not the raw training weights."""
    ema, raw = _checkpoint_model(), tiny_dit(8, hidden=128, heads=2, depth=2)
    torch.save(train_py_checkpoint(official_state_dict(ema), official_state_dict(raw)),
               model_folder / "0050000.pt")
    m = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"].execute(ckpt_name="0050000.pt", weight_dtype="fp32").result[0]
    g = torch.Generator().manual_seed(2)
    x, t, y = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([300.0]), torch.tensor([207])
    with torch.no_grad():
        out = m.model.diffusion_model(x, t, y=y)
        assert torch.equal(out, ema.model.diffusion_model(x, t, y=y))
        assert not torch.allclose(out, raw.model.diffusion_model(x, t, y=y))
    # the allowance is scoped to the loader's read: a plain weights-only load still refuses the Namespace
    with pytest.raises(Exception, match="Namespace"):
        torch.load(model_folder / "0050000.pt", weights_only=True)


def test_loader_still_refuses_checkpoints_with_other_classes(model_folder):
    sd = official_state_dict(_checkpoint_model())
    loader = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"]
    torch.save({"ema": sd, "state": TrainingState(step=3)}, model_folder / "with-code.pt")
    with pytest.raises(ValueError, match=r"with-code\.pt.*TrainingState.*weights-only") as err:
        loader.execute(ckpt_name="with-code.pt", weight_dtype="fp32")
    assert "argparse.Namespace" in str(err.value)
    # argparse.Namespace is allowed, not what it holds: a Path inside args is still refused
    args = train_py_args()
    args.results_dir = pathlib.PurePosixPath("results")
    torch.save({"ema": sd, "args": args}, model_folder / "path-in-args.pt")
    with pytest.raises(ValueError, match=r"path-in-args\.pt.*PurePosixPath.*weights-only"):
        loader.execute(ckpt_name="path-in-args.pt", weight_dtype="fp32")


@pytest.mark.parametrize("content", ["tensor", "list", "list1", "int"])
def test_pt_without_a_state_dict_is_refused_clearly(model_folder, content):
    value = {"tensor": torch.zeros(3, 4), "list": [torch.zeros(2), torch.ones(2)], "list1": [torch.zeros(2)],
             "int": 7}[content]
    torch.save(value, model_folder / f"{content}.pt")
    with pytest.raises(ValueError, match=rf"'[^']*{content}\.pt' does not hold a state dict"):
        nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"].execute(ckpt_name=f"{content}.pt", weight_dtype="fp32")


# -- the label node -----------------------------------------------------------------------------------

def _label(cond):
    assert len(cond) == 1
    return int(cond[0][1][dit_labels.LABEL_KEY].item())


def test_label_node_by_index_and_by_name():
    node = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTClassLabel"]
    pos, neg = node.execute(class_index=88, class_name="").result
    assert _label(pos) == 88 and _label(neg) == dit_labels.NULL_CLASS == 1000
    for name, index in (("golden retriever", 207), ("  Golden_Retriever ", 207), ("otter", 360),
                        ("207: golden retriever", 207), ("toilet tissue", 999), ("macaw", 88)):
        assert _label(node.execute(class_index=0, class_name=name).result[0]) == index, name
    assert node.validate_inputs(class_index=5, class_name="golden retriever") is True
    assert node.validate_inputs(class_index=5, class_name="") is True
    ambiguous = node.validate_inputs(class_index=5, class_name="retriever")
    assert isinstance(ambiguous, str) and "207: golden retriever" in ambiguous
    unknown = node.validate_inputs(class_index=5, class_name="golden retreiver")
    assert isinstance(unknown, str) and "did you mean 'golden retriever'" in unknown
    with pytest.raises(ValueError, match="not an ImageNet class"):
        node.execute(class_index=0, class_name="spaceship")


def test_class_list_is_torchvisions_imagenet_list():
    names = dit_labels.imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[207], names[999]) == ("tench", "golden retriever", "toilet tissue")
    meta = pytest.importorskip("torchvision.models._meta")
    assert list(names) == list(meta._IMAGENET_CATEGORIES)


def test_nodes_are_registered_with_tooltips():
    expected = {"ClusCaDiTLoader": "Load DiT Checkpoint (ClusCa)", "ClusCaDiTClassLabel": "DiT Class Label (ClusCa)"}
    for node_id, title in expected.items():
        node = nodes.NODE_CLASS_MAPPINGS[node_id]
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == title
        assert node.CATEGORY == "ClusCa/DiT"
        info = node.INPUT_TYPES()
        for name, spec in list(info["required"].items()) + list(info.get("optional", {}).items()):
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert list(nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"].RETURN_TYPES) == ["MODEL"]
    assert list(nodes.NODE_CLASS_MAPPINGS["ClusCaDiTClassLabel"].RETURN_TYPES) == ["CONDITIONING", "CONDITIONING"]


# -- models without a null class (trained with class_dropout_prob=0) ------------------------------------

def _no_null_class_file(folder, name="no-null.safetensors", classes=1000):
    """A DiT whose label table has exactly ``classes`` rows: no null-class row. Its weights are those of a tiny
    DiT with ``classes - 1`` classes plus the null row, so its last class row is that model's null row."""
    src = tiny_dit(7, hidden=128, heads=2, depth=2, num_classes=classes - 1)
    safetensors.torch.save_file(official_state_dict(src), str(folder / name))
    return src


def test_table_without_null_row_is_detected():
    cfg = dit_loader.infer_unet_config(official_shapes(2, 128, 2, 16, classes=999), "x")      # 1000 rows
    assert (cfg["num_classes"], cfg["null_class"]) == (1000, False)
    cfg = dit_loader.infer_unet_config(official_shapes(2, 128, 2, 16, classes=1000), "x")     # 1001 rows
    assert (cfg["num_classes"], cfg["null_class"]) == (1000, True)
    # a train.py checkpoint's args.num_classes decides for other class counts
    cfg = dit_loader.infer_unet_config(official_shapes(2, 128, 2, 16, classes=9), "x", num_classes=10)
    assert (cfg["num_classes"], cfg["null_class"]) == (10, False)
    cfg = dit_loader.infer_unet_config(official_shapes(2, 128, 2, 16, classes=10), "x", num_classes=10)
    assert (cfg["num_classes"], cfg["null_class"]) == (10, True)
    cfg = dit_loader.infer_unet_config(official_shapes(2, 128, 2, 16, classes=9), "x")        # 10 rows, no args
    assert (cfg["num_classes"], cfg["null_class"]) == (9, True)


def test_model_without_null_class_keeps_every_class_and_cfg_with_null_negative_has_no_effect(model_folder, caplog):
    src = _no_null_class_file(model_folder)
    loader = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"]
    m = loader.execute(ckpt_name="no-null.safetensors", weight_dtype="fp32").result[0]
    emb = m.model.diffusion_model.y_embedder
    assert (emb.num_classes, emb.has_null_class, emb.embedding_table.weight.shape[0]) == (1000, False, 1000)
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([400.0])
    with torch.no_grad():   # class 999 is a class here (the source model's row 999)
        assert torch.equal(m.model.diffusion_model(x, t, y=torch.tensor([999])),
                           src.model.diffusion_model(x, t, y=torch.tensor([999])))

    pos, neg = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTClassLabel"].execute(class_index=207, class_name="").result
    no_cfg = sample(m, pos, neg, steps=6, cfg=1.0, channels=4)          # cfg 1: the negative is not computed
    with caplog.at_level(logging.WARNING, logger="ClusCa"):
        guided = sample(m, pos, neg, steps=6, cfg=4.0, channels=4)
        again = sample(m, pos, neg, steps=6, cfg=4.0, channels=4)
    # the null negative gives the positive's prediction: the same as the positive as the negative, and (up to
    # batched-vs-single rounding) as no CFG at all
    assert torch.equal(guided, sample(m, pos, pos, steps=6, cfg=4.0, channels=4))
    assert psnr(guided, no_cfg) > 100 and torch.equal(guided, again)
    warnings = [r.getMessage() for r in caplog.records if "no null-class row" in r.getMessage()]
    assert len(warnings) == 1 and "CFG has no effect" in warnings[0]
    # the old behaviour, guiding away from class 999, is far from it
    away_from_999 = sample(m, pos, dit_cond(999), steps=6, cfg=4.0, channels=4)
    assert psnr(away_from_999, no_cfg) < psnr(guided, no_cfg) - 20
    # with ClusCa the same holds (its caches are per conditioning)
    assert torch.equal(sample(apply_node(m, fresh_interval=1), pos, neg, steps=6, cfg=4.0, channels=4), guided)


def test_model_without_null_class_refuses_null_positive_and_label_out_of_range(model_folder):
    _no_null_class_file(model_folder)
    m = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"].execute(ckpt_name="no-null.safetensors",
                                                            weight_dtype="fp32").result[0]
    with pytest.raises(ValueError, match="no null class.*positive input must be a class"):
        sample(m, null_cond(), null_cond(), steps=2, cfg=4.0, channels=4)
    with pytest.raises(ValueError, match="no null class.*positive input must be a class"):
        sample(m, null_cond(), dit_cond(3), steps=2, cfg=1.0, channels=4)
    mixed = nodes.ConditioningCombine().combine(null_cond(), dit_cond(88))[0]
    with pytest.raises(ValueError, match="no null class.*cannot be combined with classes in the negative"):
        sample(m, dit_cond(3), mixed, steps=2, cfg=4.0, channels=4)
    small = tiny_dit(7, hidden=128, heads=2, depth=2, num_classes=9)      # 10 rows: 9 classes + null
    torch.save(train_py_checkpoint(official_state_dict(small), official_state_dict(small), num_classes=10),
               model_folder / "ten-classes.pt")                          # train.py says 10 classes: no null row
    m10 = nodes.NODE_CLASS_MAPPINGS["ClusCaDiTLoader"].execute(ckpt_name="ten-classes.pt",
                                                              weight_dtype="fp32").result[0]
    assert (m10.model.diffusion_model.y_embedder.num_classes, m10.model.diffusion_model.y_embedder.has_null_class) \
        == (10, False)
    assert torch.isfinite(sample(m10, dit_cond(9), null_cond(), steps=2, cfg=4.0, channels=4)).all()
    with pytest.raises(ValueError, match="class label 10 is outside this DiT model's 0-9"):
        sample(m10, dit_cond(10), null_cond(), steps=2, cfg=4.0, channels=4)
