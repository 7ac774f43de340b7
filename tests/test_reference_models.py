"""The bundled reference models (``reference_models/``) and their nodes, through real ComfyUI on the CPU;
the out-of-place training path of ``scripts/train_reference_models.py`` against ComfyUI's blocks; ComfyUI's
Qwen-Image and Wan blocks trained as they are; training seeing what the sampler passes."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import torch

import pytest

from clusca_core.schedule import build_full_step_mask
from family_checks import apply_node, last_summary, nodes
from devkit import reference_training as rt
from devkit.comfy_env import pack_module
from devkit.oop_blocks import (check_equal, double_block_forward, single_block_forward, training_mode,
                               training_transformer_options)
from devkit.tiny_flux_variants import VARIANTS as FLUX_VARIANTS
from devkit.tiny_models import sample, tiny_flux, tiny_hunyuan_video
from devkit.tiny_qwen_image import tiny_qwen_image
from devkit.tiny_wan import tiny_wan


reference = pack_module("nodes.reference")
loader_mod = pack_module("nodes.reference.loader")
compat = pack_module("nodes.compat")
presets = pack_module("nodes.presets")
settings = pack_module("nodes.settings")

MODELS = reference.list_reference_models()
FAMILIES = {"flux_shapes.safetensors": "flux", "hunyuan_video_shapes.safetensors": "hunyuan_video",
            "dit_shapes.safetensors": "dit", "qwen_image_shapes.safetensors": "qwen_image",
            "wan_shapes.safetensors": "wan", "flux2_shapes.safetensors": "flux2"}
#: a shape every model knows, to compare colours with
PROMPTS = {"flux": "{} circle", "hunyuan_video": "{} circle moving right", "dit": "{} circle",
           "qwen_image": "{} circle", "flux2": "{} circle", "wan": "{} circle moving right"}
#: the LATENT of a batch of 2 from the prompt node (channels, [frames,] h, w) and its image tokens
LATENTS = {"flux": ((16, 32, 32), 256), "hunyuan_video": ((16, 8, 16, 16), 512), "dit": ((4, 32, 32), 256),
           "qwen_image": ((16, 1, 32, 32), 256), "flux2": ((128, 16, 16), 256), "wan": ((16, 8, 16, 16), 512)}
#: the families trained with the model's own extra_conds between the prompt tables and apply_model
SAMPLER_CONDS = {"qwen_image_shapes.safetensors", "flux2_shapes.safetensors", "wan_shapes.safetensors"}
#: the six bundled models take about 20.3 MB (FLUX.2 7.3 MB: its hidden size must exceed its 128 latent channels)
BUNDLE_LIMIT = 25 * 1000 * 1000

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

@pytest.mark.parametrize("family", ["flux", "hunyuan_video", "flux2"])
def test_out_of_place_training_path_equals_comfyui_blocks(family):
    g = torch.Generator().manual_seed(2)
    if family == "flux":
        m = tiny_flux(3, guidance_embed=False)
        x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    elif family == "hunyuan_video":
        m = tiny_hunyuan_video(3)
        x = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    else:       # FLUX.2 Klein-style: global modulation (the blocks get it ready-made), SiLU MLPs, no biases
        m = FLUX_VARIANTS["flux2_klein"].make(3)
        x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
        assert not m.model.diffusion_model.double_blocks[0].modulation
    base = m.model
    if family == "flux2":
        kwargs = {"c_crossattn": torch.randn(2, 6, 32, generator=g)}
    else:
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


def _backward_through_comfyui_blocks(m, x, kwargs):
    """apply_model with gradients through ComfyUI's own blocks (no patches), then backward; {block index:
    {parameter name: gradient}}."""
    base = m.model
    dm = base.diffusion_model.requires_grad_(True)
    try:
        with training_mode():
            out = base.apply_model(x, torch.tensor([0.9, 0.25]), **kwargs)
            out.square().mean().backward()
        blocks = getattr(dm, "transformer_blocks", None) or getattr(dm, "blocks", None) or dm.double_blocks
        return {i: {n: p.grad for n, p in block.named_parameters()} for i, block in enumerate(blocks)}
    finally:
        dm.requires_grad_(False)


#: Qwen-Image's last block: the model drops its text stream output, so the text query, the text output
#: projection and the text MLP of that block take no part in the output (no or zero gradient, in any training)
QWEN_LAST_BLOCK_UNUSED = ("txt_mlp.", "attn.add_q_proj.", "attn.norm_added_q.", "attn.to_add_out.")


@pytest.mark.parametrize("family", ["qwen_image", "wan"])
def test_qwen_image_and_wan_blocks_train_as_comfyui_builds_them(family):
    """QwenImageTransformerBlock and WanAttentionBlock update nothing in place that autograd saved: training
    runs ComfyUI's blocks unchanged (no out-of-place path) and every block gets finite, non-zero gradients.
    The same procedure on FLUX's blocks (in-place updates) fails, so it does detect them."""
    g = torch.Generator().manual_seed(4)
    if family == "qwen_image":
        m = tiny_qwen_image(5)
        x = torch.randn(2, 16, 1, 8, 8, generator=g)
    else:
        m = tiny_wan("t2v", 5)
        x = torch.randn(2, 16, 3, 8, 8, generator=g)
    grads = _backward_through_comfyui_blocks(m, x, {"c_crossattn": torch.randn(2, 5, 64, generator=g)})
    assert len(grads) == 2
    for i, block in grads.items():
        unused = {n for n in block if family == "qwen_image" and i == len(grads) - 1
                  and n.startswith(QWEN_LAST_BLOCK_UNUSED)}
        assert all(block[n] is None or not block[n].any() for n in unused)
        used = {n: gr for n, gr in block.items() if n not in unused}
        assert len(used) >= 10
        assert all(gr is not None and torch.isfinite(gr).all() and float(gr.abs().sum()) > 0 for gr in used.values()), \
            [n for n, gr in used.items() if gr is None or not float(gr.abs().sum()) > 0]

    flux = tiny_flux(3, guidance_embed=False)
    with pytest.raises(RuntimeError, match="inplace"):
        _backward_through_comfyui_blocks(flux, torch.randn(2, 16, 8, 8, generator=g),
                                         {"c_crossattn": torch.randn(2, 5, 64, generator=g),
                                          "y": torch.randn(2, 32, generator=g)})


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

def test_bundle_has_every_family_and_fits_the_size_limit():
    assert set(FAMILIES) <= set(MODELS), MODELS
    total = sum((loader_mod.REFERENCE_DIR / n).stat().st_size for n in MODELS)
    assert total <= BUNDLE_LIMIT, f"reference models take {total / 1e6:.2f} MB (limit 25 MB)"


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
    # the stored class name: ComfyUI's supported-models class, or for DiT the pack's own config class
    assert type(model.model.model_config).__name__ == {"DiT": "DiTModelConfig"}.get(spec.model_class, spec.model_class)
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("red"), batch=2)
    lat = latent["samples"]
    shape, tokens = LATENTS[spec.family]
    assert lat.shape == (2,) + shape
    patch = model.model.diffusion_model.patch_size
    patch = [patch] * 2 if isinstance(patch, int) else list(patch)[-2:]
    frames = lat.shape[2] if lat.ndim == 5 else 1
    assert frames * (lat.shape[-2] // patch[0]) * (lat.shape[-1] // patch[1]) == tokens
    out = ksample(model, positive, negative, latent, steps=3)
    images = decode(spec, out)
    assert images.shape == (2 * frames, spec.latent.height, spec.latent.width, 3)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_latent_mapping_is_exactly_invertible(name):
    _, spec = load(name)
    g = torch.Generator().manual_seed(0)
    if spec.latent.frames is not None:
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
    batch = 1 if spec.latent.frames is not None else 2     # a video sample already has 8 frames
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
    # models without a pooled vector: the conditioning says so as a text encoder node does (None)
    for name, text in (("qwen_image_shapes.safetensors", "cyan ring"), ("flux2_shapes.safetensors", "green square"),
                       ("wan_shapes.safetensors", "red circle moving left")):
        _, spec = load(name)
        pos, neg, _ = prompt(spec, text)
        assert pos[0][0].shape == (1, spec.text_len, spec.context_dim)
        assert "pooled_output" in pos[0][1] and pos[0][1]["pooled_output"] is None
        assert not torch.equal(pos[0][0], neg[0][0])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_stored_config_and_weights_build_on_this_comfyui(name):
    """The file's unet_config holds no field that only some ComfyUI versions know (nodes/compat.py adds those
    with the running version's value), every other field is one this tree's model takes, and the stored keys
    map onto the model's state dict through the config's process_unet_state_dict (the loader refuses any
    mismatch). Run on both trees, this is the check that one file serves both."""
    path = loader_mod.REFERENCE_DIR / name
    sd, spec = loader_mod.read_reference_file(path)
    cfg = dict(spec.unet_config)
    version_only = compat.VERSION_FIELDS.get(cfg.get("image_model"), (None, None, {}))[2]
    model, _ = load(name)
    dm = model.model.diffusion_model
    params = getattr(dm, "params", None)
    if dataclasses.is_dataclass(params):           # FLUX-style: the config builds a parameter dataclass
        takes = {f.name for f in dataclasses.fields(params)} | {"image_model"}
    else:
        takes = set(inspect.signature(type(dm).__init__).parameters)
    assert set(cfg) <= takes, sorted(set(cfg) - takes)
    # a version-dependent field is stored only where this tree knows it (checked on both trees: both know it)
    assert set(version_only) & set(cfg) <= takes
    weights = {k[len("diffusion_model."):]: v for k, v in sd.items() if k.startswith("diffusion_model.")}
    assert all(v.dtype in (torch.float16, torch.float32) for v in weights.values())
    mapped = model.model.model_config.process_unet_state_dict(dict(weights))
    assert set(mapped) == set(dm.state_dict())
    for k, v in mapped.items():
        assert torch.equal(dm.state_dict()[k], v.float()), k


@pytest.mark.parametrize("name", sorted(SAMPLER_CONDS))
def test_training_gives_the_model_what_the_sampler_gives_it(name):
    """The training path (devkit.reference_training.model_kwargs: the model's own extra_conds) and a KSampler run
    with the prompt node's conditioning reach the diffusion model with the same inputs, FLUX.2's text padded
    to 512 tokens in both."""
    model, spec = load(name)
    dm = model.model.diffusion_model
    seen = []
    hook = dm.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("red"))
        ksample(model, positive, negative, latent, steps=1, cfg=1.0)      # CFG 1: the positive prompt only
        sampled = seen[-1]
        tokens = torch.tensor([spec.tokenize(PROMPTS[spec.family].format("red"))])
        x = torch.zeros((1,) + tuple(latent["samples"].shape[1:]))
        with torch.no_grad():
            kwargs = rt.model_kwargs(spec, spec.embedder, {"tokens": tokens}, model.model, x)
            model.model.apply_model(x, torch.tensor([0.5]), **kwargs)
        trained = seen[-1]
    finally:
        hook.remove()
    assert len(seen) == 2
    keys = {k for k, v in sampled.items() if torch.is_tensor(v)}
    assert keys == {k for k, v in trained.items() if torch.is_tensor(v)} and "context" in keys
    for k in keys:
        assert torch.equal(sampled[k], trained[k]), k
    context = sampled["context"]
    assert context.shape[1] == (512 if spec.family == "flux2" else spec.text_len)
    own, _ = spec.embedder(tokens)
    assert torch.equal(context[:, -spec.text_len:], own)          # the prompt's tokens after any padding
    if spec.family == "flux2":
        assert not context[:, :-spec.text_len].any()              # ComfyUI's padding: zeros before the text


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
    assert adapter.key == spec.family
    if not adapter.presets:
        pytest.skip(f"no presets measured for {adapter.family} yet (nodes/presets.py)")
    assert set(adapter.presets) == {"quality", "balanced", "fast"}
    positive, negative, latent = prompt(spec, PROMPTS[spec.family].format("blue"))
    full_steps = {}
    for preset in ("quality", "balanced", "fast"):
        patched = apply_node(model, preset=preset, fresh_interval=2, clusters=3)    # replaced by the preset
        config = patched.model_options["transformer_options"]["clusca"].config
        if adapter.presets[preset].get("target_speedup"):      # a speed-up preset: the basic node's settings
            expected = {**settings.BEST, **presets.best_for(adapter.key), **adapter.presets[preset]}
        else:
            expected = {**adapter.reference_settings, **adapter.presets[preset]}
        for key, value in expected.items():
            assert getattr(config, key) == value, (preset, key)
        out = ksample(patched, positive, negative, latent, steps=20)
        assert torch.isfinite(out["samples"]).all()
        full_steps[preset] = last_summary(patched)["full_steps"]
    assert full_steps["quality"] >= full_steps["balanced"] >= full_steps["fast"], full_steps
    custom = apply_node(model, preset="custom", fresh_interval=2, clusters=3)
    assert custom.model_options["transformer_options"]["clusca"].config.fresh_interval == 2
    with pytest.raises(ValueError, match="representatives"):
        apply_node(model, preset="balanced", memory_mode="lite")
