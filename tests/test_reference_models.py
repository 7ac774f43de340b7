"""The bundled reference models (``reference_models/``) and their nodes, through real ComfyUI on the CPU;
and the out-of-place training path of ``scripts/train_reference_models.py`` against ComfyUI's blocks."""

from __future__ import annotations

import torch

import pytest

from clusca_core.schedule import build_full_step_mask
from family_checks import apply_node, last_summary, nodes
from devkit.comfy_env import pack_module
from devkit.oop_blocks import (check_equal, double_block_forward, single_block_forward, training_mode,
                               training_transformer_options)
from devkit.tiny_models import sample, tiny_flux, tiny_hunyuan_video


reference = pack_module("nodes.reference")
loader_mod = pack_module("nodes.reference.loader")

MODELS = reference.list_reference_models()
FAMILIES = {"flux_shapes.safetensors": "flux", "hunyuan_video_shapes.safetensors": "hunyuan_video",
            "dit_shapes.safetensors": "dit"}
#: a shape every model knows, to compare colours with
PROMPTS = {"flux": "{} circle", "hunyuan_video": "{} circle moving right", "dit": "{} circle"}
BUNDLE_LIMIT = 20 * 1000 * 1000

_loaded = {}


def load(name):
    """(MODEL, spec) through the loader node (cached per test session: loading is cheap, but not free)."""
    if name not in _loaded:
        node = nodes.NODE_CLASS_MAPPINGS["ClusCaReferenceModelLoader"]
        _loaded[name] = tuple(node.execute(model_name=name).result)
    return _loaded[name]


def prompt(spec, text, negative="", batch=1):
    node = nodes.NODE_CLASS_MAPPINGS["ClusCaReferencePrompt"]
    return node.execute(reference=spec, prompt=text, negative_prompt=negative, batch_size=batch).result


def decode(spec, latent):
    return nodes.NODE_CLASS_MAPPINGS["ClusCaReferenceDecode"].execute(reference=spec, samples=latent).result[0]


def ksample(model, positive, negative, latent, steps, cfg=4.0, seed=0):
    """KSampler (euler / simple) on a LATENT dict, returning a LATENT dict."""
    return {"samples": sample(model, positive, negative, steps=steps, cfg=cfg, latent=latent["samples"], seed=seed)}


# -- the out-of-place training path -------------------------------------------------------------------

@pytest.mark.parametrize("family", ["flux", "hunyuan_video"])
def test_out_of_place_training_path_equals_comfyui_blocks(family):
    if family == "flux":
        m = tiny_flux(3, guidance_embed=False)
        x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    else:
        m = tiny_hunyuan_video(3)
        x = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    base = m.model
    g = torch.Generator().manual_seed(2)
    kwargs = {"c_crossattn": torch.randn(2, 6, 64, generator=g), "y": torch.randn(2, 32, generator=g)}
    diffs = check_equal(base, x, torch.tensor([0.9, 0.25]), kwargs, atol=1e-6)
    n = len(base.diffusion_model.double_blocks) + len(base.diffusion_model.single_blocks)
    assert len(diffs) == n + 1 and max(diffs.values()) <= 1e-6, diffs

    # gradients flow through the patched path (ComfyUI's own blocks update their inputs in place)
    dm = base.diffusion_model.requires_grad_(True)
    with training_mode():
        out = base.apply_model(x, torch.tensor([0.9, 0.25]), transformer_options=training_transformer_options(dm), **kwargs)
        out.square().mean().backward()
    for block in list(dm.double_blocks) + list(dm.single_blocks):
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
    dm.requires_grad_(False)


def test_out_of_place_block_functions_do_not_modify_their_inputs():
    dm = tiny_flux(4, guidance_embed=False).model.diffusion_model
    g = torch.Generator().manual_seed(0)
    img, txt, vec = torch.randn(1, 6, 64, generator=g), torch.randn(1, 3, 64, generator=g), torch.randn(1, 64, generator=g)
    pe = dm.pe_embedder(torch.randint(0, 4, (1, 9, 3), generator=g).float())
    before = img.clone(), txt.clone()
    double_block_forward(dm.double_blocks[0], img, txt, vec, pe)
    x = torch.cat((txt, img), 1)
    x_before = x.clone()
    single_block_forward(dm.single_blocks[0], x, vec, pe)
    assert torch.equal(img, before[0]) and torch.equal(txt, before[1]) and torch.equal(x, x_before)


# -- the bundle -----------------------------------------------------------------------------------------

def test_bundle_has_the_three_families_and_fits_the_size_limit():
    assert set(FAMILIES) <= set(MODELS), MODELS
    total = sum((loader_mod.REFERENCE_DIR / n).stat().st_size for n in MODELS)
    assert total <= BUNDLE_LIMIT, f"reference models take {total / 1e6:.2f} MB (limit 20 MB)"


def test_node_contract():
    spec = {"ClusCaReferenceModelLoader": ("Load ClusCa Reference Model", ["model_name"], ["MODEL", "CLUSCA_REFERENCE"]),
            "ClusCaReferencePrompt": ("ClusCa Reference Prompt", ["reference", "prompt", "negative_prompt", "batch_size"],
                                      ["CONDITIONING", "CONDITIONING", "LATENT"]),
            "ClusCaReferenceDecode": ("ClusCa Reference Decode", ["reference", "samples"], ["IMAGE"])}
    for node_id, (display, inputs, outputs) in spec.items():
        node = nodes.NODE_CLASS_MAPPINGS[node_id]
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id) == display
        info = node.INPUT_TYPES()
        assert list(info["required"]) == inputs
        for name, s in info["required"].items():
            assert s[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert list(node.RETURN_TYPES) == outputs
        assert node.CATEGORY == "ClusCa/Reference"
    combo = nodes.NODE_CLASS_MAPPINGS["ClusCaReferenceModelLoader"].INPUT_TYPES()["required"]["model_name"]
    options = combo[0] if isinstance(combo[0], list) else combo[1].get("options")
    assert set(FAMILIES) <= set(options)
    prompt_inputs = nodes.NODE_CLASS_MAPPINGS["ClusCaReferencePrompt"].INPUT_TYPES()["required"]
    assert prompt_inputs["negative_prompt"][1]["default"] == "" and prompt_inputs["batch_size"][1]["default"] == 1


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_loads_samples_and_decodes_through_the_nodes(name):
    model, spec = load(name)
    assert spec.family == FAMILIES[name]
    assert spec.training.get("steps", 0) > 0 and "final_train_loss" in spec.training
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("red"), batch=2)
    lat = latent["samples"]
    video = spec.family == "hunyuan_video"
    assert lat.shape == ((2, 16, 8, 16, 16) if video else (2, 16, 32, 32) if spec.family == "flux" else (2, 4, 32, 32))
    tokens = (lat.shape[-1] // 2) * (lat.shape[-2] // 2) * (lat.shape[2] if video else 1)
    assert tokens >= 256
    out = ksample(model, positive, negative, latent, steps=3)
    images = decode(spec, out)
    frames = lat.shape[2] if video else 1
    assert images.shape == (2 * frames, spec.latent.height, spec.latent.width, 3)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_latent_mapping_is_exactly_invertible(name):
    _, spec = load(name)
    g = torch.Generator().manual_seed(0)
    if spec.family == "hunyuan_video":
        pixels = torch.randint(0, 256, (1, 3, spec.latent.height, spec.latent.width, 3), generator=g) / 255
    else:
        pixels = torch.randint(0, 256, (2, spec.latent.height, spec.latent.width, 3), generator=g) / 255
    latent = spec.encode(pixels)
    assert latent.shape[1] == spec.latent.channels
    back = spec.decode(latent)
    assert torch.allclose(back.reshape(pixels.shape), pixels.float(), atol=1e-5)


def _redness(images: torch.Tensor) -> float:
    return float((images[..., 0] - images[..., 2]).mean())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_learned_structure_red_prompts_give_redder_images_than_blue_ones(name):
    model, spec = load(name)
    template = PROMPTS[spec.family]
    scores = {}
    batch = 1 if spec.family == "hunyuan_video" else 2     # a video sample already has 8 frames
    for colour in ("red", "blue"):
        positive, negative, latent = prompt(spec, template.format(colour), batch=batch)
        scores[colour] = _redness(decode(spec, ksample(model, positive, negative, latent, steps=5, seed=11)))
    assert scores["red"] > scores["blue"] + 0.02, scores


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_unknown_words_are_refused_with_the_vocabulary(name):
    _, spec = load(name)
    with pytest.raises(ValueError) as err:
        prompt(spec, "purple elephant")
    message = str(err.value)
    assert "purple" in message and "red" in message and "circle" in message
    with pytest.raises(ValueError, match="square"):
        prompt(spec, "red circle", negative="giraffe")


def test_prompts_the_models_were_trained_with_are_accepted():
    _, spec = load("flux_shapes.safetensors")
    pos, neg, _ = prompt(spec, "Red  circle")
    assert pos[0][0].shape == (1, spec.text_len, spec.context_dim)
    assert pos[0][1]["pooled_output"].shape == (1, spec.pooled_dim)
    assert not torch.equal(pos[0][0], neg[0][0])
    _, spec = load("hunyuan_video_shapes.safetensors")
    prompt(spec, "blue square moving left")
    _, spec = load("dit_shapes.safetensors")
    pos, neg, _ = prompt(spec, "yellow ring")
    assert int(neg[0][1]["dit_class_label"]) == len(spec.classes)
    with pytest.raises(ValueError, match="classes"):
        prompt(spec, "yellow")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_apply_clusca_caches_steps_on_every_reference_model(name):
    model, spec = load(name)
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("green"))
    patched = apply_node(model, fresh_interval=3, warmup_steps=1, clusters=8)
    out = ksample(patched, positive, negative, latent, steps=6)
    summary = last_summary(patched)
    assert torch.isfinite(out["samples"]).all()
    assert summary["cached_steps"] > 0 and summary["full_steps"] < 6, summary
    assert decode(spec, out).shape[0] >= 1



@pytest.mark.parametrize("name, threshold", [("flux_shapes.safetensors", 0.08),
                                             ("hunyuan_video_shapes.safetensors", 0.06)])
def test_adaptive_schedule_follows_the_measured_errors_and_beats_the_fixed_one(name, threshold):
    """Every cached step whose error at the representatives exceeds the threshold is followed by a full step;
    on a trained model the adaptive schedule gets closer to the uncached output than the fixed schedule
    with at least as many full steps (one prompt and seed; docs/benchmarks.md has the averages)."""
    model, spec = load(name)
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("red"))
    steps = 30
    base = decode(spec, ksample(model, positive, negative, latent, steps=steps))
    adaptive = apply_node(model, mode="clusca", fresh_interval=3, warmup_steps=1, clusters=16,
                          adaptive_threshold=threshold)
    adaptive_out = decode(spec, ksample(adaptive, positive, negative, latent, steps=steps))
    s = last_summary(adaptive)
    assert s["probe_errors"], "the adaptive schedule measured nothing"
    fulls = set(s["full_step_indices"])
    for step, _, err in s["probe_errors"]:
        if err > threshold and step + 1 < steps:
            assert step + 1 in fulls, (step, err, sorted(fulls))
    # the sparsest fixed schedule with at least as many full steps
    interval = max(n for n in range(2, 10) if sum(build_full_step_mask(steps, 1, n)) >= s["full_steps"])
    fixed = apply_node(model, mode="taylorseer", fresh_interval=interval, warmup_steps=1)
    fixed_out = decode(spec, ksample(fixed, positive, negative, latent, steps=steps))
    s_fixed = last_summary(fixed)
    assert fulls != set(s_fixed["full_step_indices"])
    assert s["full_steps"] <= s_fixed["full_steps"], (s["full_steps"], s_fixed["full_steps"])
    mse = lambda a: float(((a - base) ** 2).mean())
    assert mse(adaptive_out) < mse(fixed_out), (mse(adaptive_out), mse(fixed_out))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_presets_apply_the_family_settings_and_run(name):
    model, spec = load(name)
    adapter = pack_module("nodes.adapters").find_adapter(model.model.diffusion_model)[0]
    assert set(adapter.presets) == {"quality", "balanced", "fast"}
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("blue"))
    full_steps = {}
    for preset in ("quality", "balanced", "fast"):
        patched = apply_node(model, preset=preset, fresh_interval=2, clusters=3)    # replaced by the preset
        config = patched.model_options["transformer_options"]["clusca"].config
        for key, value in {**adapter.reference_settings, **adapter.presets[preset]}.items():
            assert getattr(config, key) == value, (preset, key)
        out = ksample(patched, positive, negative, latent, steps=20)
        assert torch.isfinite(out["samples"]).all()
        full_steps[preset] = last_summary(patched)["full_steps"]
    assert full_steps["quality"] >= full_steps["balanced"] >= full_steps["fast"], full_steps
    custom = apply_node(model, preset="custom", fresh_interval=2, clusters=3)
    assert custom.model_options["transformer_options"]["clusca"].config.fresh_interval == 2
    with pytest.raises(ValueError, match="representatives"):
        apply_node(model, preset="balanced", memory_mode="lite")
