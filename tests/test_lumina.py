"""ClusCa on tiny Z-Image and Lumina 2 models (ComfyUI's ``NextDiT``) through real ComfyUI.

The model calls its layers without a patch point: ClusCa reaches them through ModelPatcher object patches on each
layer's ``forward``. Besides the family checks, these tests check what that must not break: the model exactly as
before once unpatched, other nodes' object patches, LoRA weight patches, multi-GPU deep clones.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from family_checks import FamilyChecks, apply_node, last_summary
from devkit.comfy_env import pack_module
from devkit.metrics import psnr
from devkit.tiny_lumina import lumina_cond, lumina_latent, supported, tiny_lumina
from devkit.tiny_models import AttentionCounter, sample

import comfy.model_management
import comfy.sd
from comfy.ldm.lumina.model import NextDiT
from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow

LAYERS = 2
REFINERS = 2            # one noise-refiner and one context-refiner layer run on every call


class LuminaChecks(FamilyChecks):
    variant = "z_image"
    blocks = LAYERS
    extra_attention_per_call = REFINERS

    def make_model(self, dtype=torch.float32):
        return tiny_lumina(0, self.variant, dtype=dtype)

    def conds(self, seed, batch=1, tokens=None):
        return lumina_cond(seed, tokens=tokens or 8, batch=batch)

    def latent(self, batch=1, size=None):
        return lumina_latent(self.variant, batch, size or (16, 20))

    def latent_size_pair(self):
        return (16, 20), (24, 16)


class TestZImageFamily(LuminaChecks):
    family = "Z-Image"


class TestLumina2Family(LuminaChecks):
    family = "Lumina 2"
    variant = "lumina2"


def run(model, variant="z_image", steps=10, cfg=2.0, pos=None, neg=None, **kw):
    pos = pos if pos is not None else lumina_cond(1)
    neg = neg if neg is not None else lumina_cond(2)
    return sample(model, pos, neg, steps=steps, cfg=cfg, latent=lumina_latent(variant), **kw)


def forward_patches(model) -> dict:
    cls = pack_module("nodes.forward_patch").ClusCaForwardPatch
    return {k: v for k, v in model.object_patches.items() if isinstance(v, cls)}


def snapshot(patcher) -> dict:
    """Everything about the diffusion model a patch could leave behind: the module tree (objects and classes),
    each module's own attributes, and every weight."""
    dm = patcher.model.diffusion_model
    return {"modules": [(name, id(m), type(m)) for name, m in dm.named_modules()],
            "attributes": {name: sorted(vars(m)) for name, m in dm.named_modules()},
            "weights": {k: v.clone() for k, v in dm.state_dict().items()}}


def assert_same(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"]
    assert after["attributes"] == before["attributes"]
    assert after["weights"].keys() == before["weights"].keys()
    assert all(torch.equal(after["weights"][k], v) for k, v in before["weights"].items())


def test_the_families_are_told_apart():
    adapters = pack_module("nodes.adapters")
    assert adapters.find_adapter(tiny_lumina(0, "z_image").model.diffusion_model)[0].key == "z_image"
    assert adapters.find_adapter(tiny_lumina(0, "lumina2").model.diffusion_model)[0].key == "lumina2"


def test_one_object_patch_per_layer_and_nothing_else():
    m = tiny_lumina(0)
    patched = apply_node(m)
    patches = forward_patches(patched)
    assert sorted(patches) == [f"diffusion_model.layers.{i}.forward" for i in range(LAYERS)]
    assert set(patched.object_patches) - set(patches) == set(m.object_patches)
    assert not forward_patches(m)
    to = patched.model_options["transformer_options"]
    assert not to.get("patches_replace", {}).get("dit")          # no dit patches: NextDiT has no such point


def test_unpatched_model_is_exactly_as_before_after_a_run():
    m = tiny_lumina(0)
    base = run(m)
    loaded = snapshot(m)                # as ComfyUI leaves a loaded model
    comfy.model_management.unload_all_models()
    unloaded = snapshot(m)              # and an unloaded one (ComfyUI's own load marks stay on the modules)
    patched = apply_node(m)
    layers = m.model.diffusion_model.layers
    seen = []

    def watch(step, x0, x, total):      # while ClusCa's clone samples, its patches are in place
        seen.append([type(vars(layer).get("forward")).__name__ for layer in layers])

    run(patched, callback=watch)
    assert seen and all(names == ["ClusCaForwardPatch"] * LAYERS for names in seen)
    comfy.model_management.unload_all_models()      # ClusCa's clone unloaded: unpatched
    assert_same(unloaded, snapshot(m))              # exactly: not even a copy of the original forward is left
    assert torch.equal(run(m), base)
    assert_same(loaded, snapshot(m))
    run(patched)
    assert torch.equal(run(m), base)    # ComfyUI swaps the clones (the other clone's unpatch restores ours)
    after = snapshot(m)
    for name, layer in zip(("layers.0", "layers.1"), layers):
        # ComfyUI's restore of an object-patched method: the class's forward bound to the layer itself
        left = vars(layer).get("forward")
        assert left is None or left == type(layer).forward.__get__(layer)
        after["attributes"][name] = [a for a in after["attributes"][name] if a != "forward"]
    assert_same(loaded, after)
    assert not forward_patches(m)


def test_another_nodes_object_patch_on_another_key_still_applies():
    """ModelSamplingAuraFlow (what Z-Image workflows put before the sampler) patches ``model_sampling``."""
    m = tiny_lumina(0)
    shift = ModelSamplingAuraFlow()
    shifted = shift.patch_aura(m, 7.0)[0]
    base, base_shifted = run(m), run(shifted)
    assert not torch.equal(base, base_shifted)
    before = run(shift.patch_aura(apply_node(m, fresh_interval=1), 7.0)[0])
    after = run(apply_node(shifted, fresh_interval=1))
    assert torch.equal(before, base_shifted) and torch.equal(after, base_shifted)
    cached = apply_node(shifted)
    assert "model_sampling" in cached.object_patches
    assert psnr(run(cached), base_shifted) > 20 and last_summary(cached)["cached_steps"] > 0


def test_another_nodes_patch_on_the_same_forward_is_kept_for_full_steps():
    m = tiny_lumina(0).clone()
    layer = m.model.diffusion_model.layers[1]
    calls = []

    def other(*args, **kwargs):           # e.g. a guidance node that wraps a layer's forward
        calls.append(1)
        return type(layer).forward(layer, *args, **kwargs)

    m.add_object_patch("diffusion_model.layers.1.forward", other)
    base = run(m)
    assert len(calls) == 10
    calls.clear()
    assert torch.equal(run(apply_node(m, fresh_interval=1)), base) and len(calls) == 10
    calls.clear()
    patched = apply_node(m)
    run(patched)
    assert len(calls) == last_summary(patched)["full_steps"] < 10
    assert forward_patches(patched)["diffusion_model.layers.1.forward"].inner is other


def test_applying_twice_replaces_the_first():
    m = tiny_lumina(0)
    once = apply_node(m, fresh_interval=3)
    twice = apply_node(once, fresh_interval=4)
    patches = forward_patches(twice)
    assert len(patches) == LAYERS and all(p.inner is None for p in patches.values())
    assert all(patches[k] is not forward_patches(once)[k] for k in patches)
    import comfy.patcher_extension as pe
    for point in (pe.WrappersMP.OUTER_SAMPLE, pe.WrappersMP.DIFFUSION_MODEL):
        assert len(twice.wrappers[point]["clusca"]) == 1
    assert twice.model_options["transformer_options"]["clusca"].config.fresh_interval == 4
    counter = AttentionCounter()
    counter.install(twice)
    out = run(twice, steps=9)
    assert last_summary(twice)["full_steps"] == 4       # {0, 1, 2, 6} at interval 4
    assert counter.calls == 4 * LAYERS + 9 * REFINERS   # every layer went through ClusCa once, not twice
    assert torch.equal(out, run(apply_node(m, fresh_interval=4), steps=9))


def lora(patcher, seed=5, rank=4, strength=1.0):
    """A LoRA on every layer's attention and feed-forward, loaded by ComfyUI's own LoRA code (weight patches)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, w in patcher.model.diffusion_model.state_dict().items():
        if key.startswith("layers.") and key.endswith((".qkv.weight", ".w1.weight", ".w2.weight", ".w3.weight")):
            name = "diffusion_model." + key[:-len(".weight")]
            sd[name + ".lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g)
            sd[name + ".lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) / w.shape[1] ** 0.5
    return comfy.sd.load_lora_for_models(patcher, None, sd, strength, 0)[0]


def test_lora_weight_patches_apply_through_the_wrapper():
    m = tiny_lumina(0, "lumina2")
    with_lora = lora(m)
    assert len(with_lora.patches) == 4 * LAYERS
    base, base_lora = run(m, "lumina2"), run(with_lora, "lumina2")
    assert psnr(base_lora, base) < 22                                    # the LoRA matters
    assert torch.equal(run(apply_node(with_lora, fresh_interval=1), "lumina2"), base_lora)
    assert torch.equal(run(lora(apply_node(m, fresh_interval=1)), "lumina2"), base_lora)   # loaded after ClusCa
    cached = apply_node(with_lora)
    out = run(cached, "lumina2")
    assert last_summary(cached)["cached_steps"] > 0
    # cached steps forecast and refresh what the patched weights computed: far closer to the LoRA model
    assert psnr(out, base_lora) > 30 and psnr(out, base_lora) > psnr(out, base) + 10


def test_fp8_weights_with_manual_cast():
    """Weights stored as float8 and cast per call by ComfyUI's ops (as UNETLoader's fp8 weight dtypes do)."""
    m = tiny_lumina(0, "lumina2", dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert {p.dtype for p in m.model.diffusion_model.parameters()} == {torch.float8_e4m3fn}
    base = run(m, "lumina2")
    assert not torch.equal(base, run(tiny_lumina(0, "lumina2"), "lumina2"))
    assert torch.equal(run(apply_node(m, fresh_interval=1), "lumina2"), base)
    patched = apply_node(m)
    out = run(patched, "lumina2")
    assert last_summary(patched)["cached_steps"] > 0 and "disabled" not in last_summary(patched)
    assert psnr(out, base) > 25


@pytest.mark.skipif('"double_block"' not in inspect.getsource(NextDiT._forward),
                    reason="this ComfyUI version's NextDiT has no post-layer patches")
@pytest.mark.parametrize("memory_mode", ["full", "lite"])
def test_post_layer_patches_see_the_layer_stack_input_unchanged(memory_mode):
    """0.33's post-layer ``double_block`` patches (Z-Image's Fun ControlNet) write into each layer's output in
    place and read the stack's input kept aside: ClusCa's layers must return new tensors, as the model's do."""
    m = tiny_lumina(0).clone()
    seen = []

    def post_layer(kwargs):
        seen.append((kwargs["block_index"], float(kwargs["img_input"].double().sum())))
        return {"img": kwargs["img"] + 0.01}

    m.set_model_double_block_patch(post_layer)
    base = run(m)
    seen.clear()
    patched = apply_node(m, memory_mode=memory_mode)
    out = run(patched)
    assert last_summary(patched)["cached_steps"] > 0 and torch.isfinite(out).all() and psnr(out, base) > 20
    calls = [seen[i:i + LAYERS] for i in range(0, len(seen), LAYERS)]
    assert len(calls) == 10 and all([b for b, _ in c] == list(range(LAYERS)) for c in calls)
    assert all(c[0][1] == c[-1][1] for c in calls)      # every layer of a call saw the same stack input


def test_caption_and_image_are_clustered_apart():
    m = apply_node(tiny_lumina(0), clusters=4)
    run(m)
    s = last_summary(m)
    assert s["geometry"] == {"blocks": LAYERS, "image tokens": 80, "text tokens": 32}
    assert s["tokens_per_cached_step"] == {"img": 4 + 4}         # 4 caption + 4 image representatives
    snap = m.model_options["transformer_options"]["clusca"].last_clusters
    assert snap["labels"].numel() == 80 and snap["grid"] == (1, 8, 10)
    assert set(snap["labels"].tolist()) <= set(range(4, 8))      # the image segment's own clusters


def test_probe_error_is_measured_on_every_cached_step():
    m = apply_node(tiny_lumina(0), verbose=True)
    run(m)
    s = last_summary(m)
    assert len(s["probe_errors"]) == s["cached_steps"] > 0
    assert all(0 < e < 10 for _, _, e in s["probe_errors"])


def test_masked_caption_tokens():
    """ComfyUI's text encoders give an attention mask (the context refiner uses it in 0.3.75, where a batched
    cond + uncond with a mask fails inside the model itself: CFG 1 here)."""
    m = tiny_lumina(0, "lumina2")
    pos, neg = lumina_cond(1, tokens=10, masked=3), lumina_cond(2, tokens=10, masked=3)
    base = run(m, "lumina2", pos=pos, neg=neg, cfg=1.0)
    patched = apply_node(m)
    out = run(patched, "lumina2", pos=pos, neg=neg, cfg=1.0)
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert last_summary(patched)["cached_steps"] > 0 and "disabled" not in last_summary(patched)


@pytest.mark.skipif("clip_text_dim" not in inspect.signature(NextDiT.__init__).parameters,
                    reason="this ComfyUI version's NextDiT has no pooled CLIP text (NewBie)")
def test_newbie_pooled_text_in_the_modulation():
    """NewBie: Lumina 2 whose layers' modulation input also carries a pooled CLIP text embedding."""
    m = tiny_lumina(0, "lumina2", clip_text_dim=32)
    assert m.model.diffusion_model.clip_text_pooled_proj is not None
    pos, neg = lumina_cond(1, pooled=32), lumina_cond(2, pooled=32)
    base = run(m, "lumina2", pos=pos, neg=neg)
    other = [[pos[0][0], {"pooled_output": torch.zeros(1, 32)}]]
    assert not torch.equal(base, run(m, "lumina2", pos=other, neg=neg))      # the pooled text is used
    assert torch.equal(run(apply_node(m, fresh_interval=1), "lumina2", pos=pos, neg=neg), base)
    patched = apply_node(m)
    out = run(patched, "lumina2", pos=pos, neg=neg)
    s = last_summary(patched)
    assert s["family"] == "Lumina 2" and s["cached_steps"] > 0 and "disabled" not in s
    assert psnr(out, base) > 25


@pytest.mark.skipif(not supported("z_image_pixel"), reason="this ComfyUI version has no pixel-space Z-Image")
def test_pixel_space_z_image():
    m = tiny_lumina(0, "z_image_pixel")
    assert pack_module("nodes.adapters").find_adapter(m.model.diffusion_model)[0].key == "z_image_pixel"
    base = run(m, "z_image_pixel")
    assert torch.equal(run(apply_node(m, fresh_interval=1), "z_image_pixel"), base)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, "z_image_pixel")
    s = last_summary(patched)
    assert (s["full_steps"], s["cached_steps"]) == (4, 6) and "disabled" not in s
    assert counter.calls == 4 * LAYERS + 10 * REFINERS
    assert torch.isfinite(out).all() and not torch.equal(out, base)


@pytest.mark.skipif("ref_latents" not in inspect.signature(NextDiT._forward).parameters,
                    reason="this ComfyUI version's NextDiT takes no reference latents")
def test_reference_images_run_in_full():
    """Z-Image Omni (0.33): reference latents make the model modulate their tokens with timestep zero."""
    m = tiny_lumina(0)
    ref = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(4))]
    pos, neg = lumina_cond(1, reference=ref), lumina_cond(2, reference=ref)
    base = run(m, pos=pos, neg=neg)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = run(patched, pos=pos, neg=neg)
    assert torch.equal(out, base)
    assert counter.calls == 10 * (LAYERS + REFINERS)


def test_multigpu_deep_clone_patches_its_own_layers():
    """0.33's multi-GPU split runs the uncond on a deep clone (a fresh model from the loader's factory): its
    object patches must call its own layers, not the original model's."""
    pytest.importorskip("comfy.multigpu", reason="this ComfyUI version has no multi-GPU CFG split")
    from test_multigpu import split_over_two_devices
    m = tiny_lumina(0)
    m.cached_patcher_init = (tiny_lumina, (0,))
    serial = run(m)
    patched = apply_node(m)
    split = split_over_two_devices(patched)
    clone = split.additional_models["multigpu"][0]
    own = clone.model.diffusion_model.layers
    assert all(p.layer is own[i] for i, p in enumerate(forward_patches(clone).values()))
    out = run(split)
    s = last_summary(split)
    assert "disabled" not in s and s["cached_steps"] > 0
    assert s["evaluations_cached"] == 2 * s["cached_steps"]
    assert torch.isfinite(out).all() and psnr(out, serial) > 20
