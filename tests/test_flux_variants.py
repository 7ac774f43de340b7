"""ClusCa on the FLUX-style variants through real ComfyUI: FLUX.2 (dev and Klein-style), Chroma, Chroma Radiance,
Ovis-Image and LongCat-Image, built from ComfyUI's own config classes (``devkit.tiny_flux_variants``).

Each variant runs the shared family checks on every ComfyUI tree that has it (Ovis-Image and LongCat-Image need
``FluxParams.yak_mlp`` / ``txt_ids_dims``, which 0.3.75 lacks: skipped there with that reason). Then: how the
FLUX.1 entry and the variants' entries tell the models apart (also against ComfyUI's own detection), FLUX.2 edit
references (``index``, and ``index_timestep_zero`` from the model's ``default_ref_method`` or from the call),
Chroma with skipped blocks, and the layout self-check on every variant.
"""

from __future__ import annotations

import pytest
import torch

from family_checks import FamilyChecks, apply_node, last_summary, live_slot_caches
from devkit.comfy_env import comfyui_version, pack_module
from devkit.metrics import psnr
from devkit.tiny_flux_variants import FLUX2_TEXT_TOKENS, VARIANTS, with_references
from devkit.tiny_models import AttentionCounter, sample, tiny_flux

import comfy.model_detection

find_adapter = pack_module("nodes.adapters").find_adapter
get_adapter = pack_module("nodes.adapters").get_adapter
flux_layers = pack_module("nodes.families.flux_layers")
ClusCaConfig = pack_module("clusca_core.config").ClusCaConfig


def needs(key: str):
    """Skip unless the running ComfyUI has the variant (with the reason it has not)."""
    why = VARIANTS[key].available()
    return pytest.mark.skipif(why is not None, reason=f"{VARIANTS[key].name}: {why}")


def timestep_zero_supported() -> bool:
    """Whether this ComfyUI's FLUX forward gives ``index_timestep_zero`` references their own timestep (the pack's
    reading of it, checked against the tree in test_timestep_zero_support_follows_the_tree)."""
    import comfy.ldm.flux.model
    return flux_layers.supports_timestep_zero(comfy.ldm.flux.model.Flux)


def test_timestep_zero_support_follows_the_tree():
    """0.3.75's FLUX forward has no timestep-zero references (it treats the method like "offset"); 0.33's has."""
    assert timestep_zero_supported() == (comfyui_version() != "0.3.75")


class VariantChecks(FamilyChecks):
    """The shared family checks on one ``VARIANTS`` entry, plus the layout self-check."""
    variant = ""

    @property
    def v(self):
        return VARIANTS[self.variant]

    def make_model(self, dtype=torch.float32):
        return self.v.make(0, dtype)

    def conds(self, seed, batch=1, tokens=None):
        return self.v.cond(seed, tokens or 8)

    def latent(self, batch=1, size=None):
        return self.v.latent(batch, size)

    def latent_size_pair(self):
        h, w = self.v.size
        return (h, w), (h + h // 2, w)

    def test_layout_self_check_switches_caching_off(self, caplog):
        """A block that computes more than its branches (here a forward hook scaling the last double
        block's image output by 1.05) fails the first full step's self-check: the run goes on exactly as without
        ClusCa, every step in full."""
        m = self.make_model()
        block = m.model.diffusion_model.double_blocks[-1]
        handle = block.register_forward_hook(lambda _m, _i, out: (out[0] * 1.05, out[1]))
        try:
            base = self.run(m)
            patched = apply_node(m)
            counter = AttentionCounter()
            counter.install(patched)
            with caplog.at_level("WARNING", logger="ClusCa"):
                out = self.run(patched)
        finally:
            handle.remove()
        assert torch.equal(out, base)
        assert counter.calls == 10 * self.blocks
        s = last_summary(patched)
        assert "do not add up" in s["disabled"] and s["cached_steps"] == 0
        assert any("caching switched off" in r.getMessage() for r in caplog.records)
        assert live_slot_caches() == 0

    def test_entry_claims_the_model(self):
        adapter, reason = find_adapter(self.make_model().model.diffusion_model)
        assert adapter is not None, reason
        assert adapter.family == self.family


@needs("flux2")
class TestFlux2Dev(VariantChecks):
    """FLUX.2 dev: global modulation, guidance embedding. model_base.Flux2 pads every text conditioning to 512
    tokens, so conditionings of different lengths only stay apart (separate model calls) above that length:
    an explicit token count here means that many tokens beyond 512."""
    variant = "flux2"
    family = "FLUX.2"
    blocks = 4

    def conds(self, seed, batch=1, tokens=None):
        return self.v.cond(seed, FLUX2_TEXT_TOKENS + tokens if tokens else 8)


@needs("flux2_klein")
class TestFlux2Klein(TestFlux2Dev):
    """FLUX.2 Klein-style: no guidance embedding."""
    variant = "flux2_klein"


@needs("chroma")
class TestChroma(VariantChecks):
    variant = "chroma"
    family = "Chroma"
    blocks = 4


@needs("chroma_radiance")
class TestChromaRadiance(VariantChecks):
    """Pixel space (3 channels), patch size 4: a 32 x 32 image is 64 tokens; the NeRF head runs every call."""
    variant = "chroma_radiance"
    family = "Chroma Radiance"
    blocks = 4


@needs("ovis_image")
class TestOvisImage(VariantChecks):
    variant = "ovis_image"
    family = "Ovis-Image"
    blocks = 4


@needs("longcat_image")
class TestLongCatImage(VariantChecks):
    variant = "longcat_image"
    family = "LongCat-Image"
    blocks = 4


# -- which entry takes which model ------------------------------------------------------------------------

def test_flux1_entry_refuses_the_variants_and_keeps_flux1():
    flux1 = get_adapter("flux")
    ok, reason = flux1.probe(tiny_flux(0).model.diffusion_model)
    assert ok, reason
    expected = {"flux2": "a FLUX.2 model", "flux2_klein": "a FLUX.2 model", "ovis_image": "an Ovis-Image model",
                "longcat_image": "a LongCat-Image model"}
    tried = 0
    for key, why in expected.items():
        if VARIANTS[key].available() is None:
            ok, reason = flux1.probe(VARIANTS[key].make(0).model.diffusion_model)
            assert not ok and reason == why, key
            tried += 1
    assert tried >= 2          # FLUX.2 exists on every tested tree


@needs("longcat_image")
@pytest.mark.parametrize("key", ["ovis_image", "longcat_image"])
def test_comfyui_detection_and_the_entries_agree(key):
    """ComfyUI's model_detection, reading the tiny model's state dict, finds the parameters the entries go by
    (Ovis: yak MLP + text norm; LongCat: context 3584 and no pooled vector; both text ids on axes 1 and 2), and
    the model ComfyUI would build from them is claimed by the entry of that name."""
    v = VARIANTS[key]
    m = v.make(0)
    sd = m.model.diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(sd, "")
    assert detected["image_model"] == "flux" and detected["txt_ids_dims"] == [1, 2]
    assert detected["yak_mlp"] == (key == "ovis_image") and detected["txt_norm"] == (key == "ovis_image")
    assert detected["vec_in_dim"] is None and detected["context_in_dim"] == v.context_dim
    params = m.model.diffusion_model.params
    for name in ("txt_ids_dims", "yak_mlp", "txt_norm", "vec_in_dim", "context_in_dim"):
        assert getattr(params, name) == detected[name], name
    adapter, reason = find_adapter(m.model.diffusion_model)
    assert adapter is not None and adapter.family == v.name, reason


# -- FLUX.2 edit references ---------------------------------------------------------------------------------

def _ref(seed=5, size=4):
    return torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(seed))


def _edit_run(model, v, method=None, cfg=2.0, steps=10):
    pos = with_references(v.cond(1), [_ref()], method)
    neg = with_references(v.cond(2), [_ref()], method)
    return sample(model, pos, neg, steps=steps, cfg=cfg, latent=v.latent())


def _check_cached_edit(m, v, method=None, cfg=2.0):
    """The edit run with ClusCa: caching happened with the 16 reference tokens among the image tokens, no
    attention on cached steps, close to the uncached run; interval 1 is the uncached run exactly."""
    base = _edit_run(m, v, method, cfg)
    patched = apply_node(m)
    counter = AttentionCounter()
    counter.install(patched)
    out = _edit_run(patched, v, method, cfg)
    s = last_summary(patched)
    assert "disabled" not in s, s.get("disabled")
    assert s["geometry"]["reference tokens"] == 16 and (s["full_steps"], s["cached_steps"]) == (4, 6)
    assert counter.calls == s["full_steps"] * v.blocks
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    assert torch.equal(_edit_run(apply_node(m, fresh_interval=1), v, method, cfg), base)
    return base


@needs("flux2")
@pytest.mark.parametrize("key", ["flux2", "flux2_klein"])
def test_flux2_index_references_are_cached_with_the_image(key):
    v = VARIANTS[key]
    m = v.make(0)
    assert m.model.diffusion_model.params.default_ref_method == "index"
    base = _check_cached_edit(m, v)
    assert not torch.equal(base, sample(m, v.cond(1), v.cond(2), steps=10, cfg=2.0, latent=v.latent()))


def _describe(model, refs, method=None):
    """The pack's description of one call of this model (what the DIFFUSION_MODEL wrapper sees)."""
    dm = model.model.diffusion_model
    adapter, _ = find_adapter(dm)
    bound = {"x": torch.zeros(1, 16, 8, 8), "context": torch.zeros(1, 8, dm.params.context_in_dim),
             "ref_latents": refs, "transformer_options": {}}
    if method is not None:
        bound["ref_latents_method"] = method
    return adapter.describe_call(dm, bound, ClusCaConfig())


@needs("flux2")
def test_timestep_zero_is_read_from_the_model_and_from_the_call():
    """``index_timestep_zero`` counts whether it is the call's method or the model's default (FluxKVCache and
    FLUX.2 edit checkpoints set ``params.default_ref_method``); where ComfyUI gives such references their own
    timestep the call carries the per-token modulation map (the image-stream tokens after the 64 target ones),
    elsewhere (0.3.75 treats the method like "offset") the references are ordinary image tokens."""
    m = VARIANTS["flux2_klein"].make(0)
    key = flux_layers.TIMESTEP_ZERO_FROM
    assert key not in _describe(m, [_ref()]).extras
    assert key not in _describe(m, [_ref()], "index").extras
    assert key not in _describe(m, [], "index_timestep_zero").extras        # no references: nothing to do
    expected = (64, 8) if timestep_zero_supported() else None     # from the 64 target tokens (after 8 text)
    assert _describe(m, [_ref()], "index_timestep_zero").extras.get(key) == expected
    params = m.model.diffusion_model.params
    params.default_ref_method = "index_timestep_zero"          # what FluxKVCache's object patch sets
    try:
        assert _describe(m, [_ref()]).extras.get(key) == expected
        assert key not in _describe(m, [_ref()], "index").extras        # the call's method wins
    finally:
        params.default_ref_method = "index"


@needs("flux2")
@pytest.mark.parametrize("source", ["model default", "call"])
def test_flux2_timestep_zero_references_are_cached_with_per_token_modulation(source):
    """Klein-style FLUX.2 with ``index_timestep_zero`` (from the model's default_ref_method, as FluxKVCache and
    FLUX.2 edit models set it, or from the conditioning's reference_latents_method), CFG batched: cached like
    the other tokens, the reference tokens modulated with the timestep-zero rows on cached steps too. The first
    full step's self-check compares the per-token gates with what ComfyUI's blocks computed (to 1e-4), so a
    wrong token map would switch caching off and fail here."""
    v = VARIANTS["flux2_klein"]
    m = v.make(0)
    if source == "model default":
        m = m.clone()
        m.add_object_patch("diffusion_model.params.default_ref_method", "index_timestep_zero")
        method = None
    else:
        method = "index_timestep_zero"
    base = _check_cached_edit(m, v, method)
    if timestep_zero_supported():      # the references really are treated differently from "index"
        assert psnr(base, _edit_run(v.make(0), v, "index")) < 60


@needs("flux2")
def test_flux2_dev_timestep_zero_with_cfg_one():
    """FLUX.2 dev (guidance embedding) with timestep-zero references: ComfyUI 0.33 itself only runs this one
    batch row at a time (the doubled timestep embedding does not broadcast against the guidance embedding), so
    CFG 1."""
    v = VARIANTS["flux2"]
    _check_cached_edit(v.make(0), v, "index_timestep_zero", cfg=1.0)


@needs("flux2")
def test_flux_kv_cache_node_switches_caching_off_cleanly(caplog):
    """ComfyUI's FluxKVCache node sets default_ref_method to index_timestep_zero and, after its first model call,
    drops the reference tokens from the image stream (their keys and values come from its own cache). The
    image stream then no longer has the tokens the first call's caches hold: ClusCa switches caching off for
    the run (a known limitation) and the result is exactly the KV-cache model's."""
    nodes_flux = pytest.importorskip("comfy_extras.nodes_flux")
    if not hasattr(nodes_flux, "FluxKVCache"):
        pytest.skip("this ComfyUI has no FluxKVCache node")
    v = VARIANTS["flux2_klein"]
    m = v.make(0)
    base = _edit_run(nodes_flux.FluxKVCache.execute(m).result[0], v)
    for patched in (apply_node(nodes_flux.FluxKVCache.execute(m).result[0]),
                    nodes_flux.FluxKVCache.execute(apply_node(m)).result[0]):
        with caplog.at_level("WARNING", logger="ClusCa"):
            out = _edit_run(patched, v)
        assert torch.equal(out, base)
        s = last_summary(patched)
        assert s["cached_steps"] == 0 and "double_block 0" in s["disabled"]
        assert live_slot_caches() == 0


def test_flux1_timestep_zero_references_run_in_full():
    """FLUX.1's blocks compute their own modulation from one timestep embedding per row; ComfyUI's forward cannot
    give them two (0.33 fails inside the model), so such calls are left to ComfyUI in full."""
    m = tiny_flux(0)
    dm = m.model.diffusion_model
    bound = {"x": torch.zeros(1, 16, 8, 8), "context": torch.zeros(1, 8, 64), "ref_latents": [_ref(size=8)],
             "ref_latents_method": "index_timestep_zero"}
    info = get_adapter("flux").describe_call(dm, bound, ClusCaConfig())
    if timestep_zero_supported():
        assert isinstance(info, str) and "index_timestep_zero" in info
    else:
        assert info.geometry["reference tokens"] == 16


@needs("flux2")
@pytest.mark.parametrize("case", ["flux2 klein", "flux2 klein timestep-zero references", "ovis_image"])
def test_refresh_scope_all_on_the_single_blocks(case):
    """refresh_scope 'all' also refreshes the MLP half of the parallel single blocks: FLUX.2's SiLU-gated MLP
    (also with per-token modulation for timestep-zero references); Ovis-Image's yak MLP needs both halves of
    linear1's MLP part, so its single blocks stay plainly cached (no joint refresh)."""
    key = "ovis_image" if case == "ovis_image" else "flux2_klein"
    v = VARIANTS[key]
    if v.available() is not None:
        pytest.skip(v.available())
    m = v.make(0)
    if "references" in case:
        pos = with_references(v.cond(1), [_ref()], "index_timestep_zero")
        neg = with_references(v.cond(2), [_ref()], "index_timestep_zero")
    else:
        pos, neg = v.cond(1), v.cond(2)
    run = lambda model: sample(model, pos, neg, steps=10, cfg=2.0, latent=v.latent())  # noqa: E731
    base = run(m)
    patching = pack_module("nodes.patching")
    patched = patching.apply_clusca(m, ClusCaConfig(refresh_scope="all", clusters=4))
    out = run(patched)
    s = last_summary(patched)
    assert "disabled" not in s, s.get("disabled")
    assert s["cached_steps"] == 6 and torch.isfinite(out).all() and psnr(out, base) > 20
    joint = {"img": 4, "txt": 4, "joint": 8} if key == "flux2_klein" else {"img": 4, "txt": 4}
    assert s["tokens_per_cached_step"] == joint
    double_only = run(patching.apply_clusca(m, ClusCaConfig(clusters=4)))
    assert torch.equal(out, double_only) == (key == "ovis_image")


# -- Chroma with skipped blocks -------------------------------------------------------------------------------

@needs("chroma")
@pytest.mark.parametrize("skip_mmdit,skip_dit", [([1], [0]), ([0], [1]), ([1], [])])
def test_chroma_skipped_blocks(skip_mmdit, skip_dit):
    """Chroma skips the double / single blocks listed in ``skip_mmdit`` / ``skip_dit``: the skipped blocks are
    never called, the others are cached as usual, and the clustering uses the output of the last double block
    that ran (also when the model's last double block is skipped): the image and text tokens are refreshed from
    clusters, and the image clusters of the last full step are a K-means fixed point on that block's output."""
    v = VARIANTS["chroma"]
    m = v.make(0).clone()
    m.add_object_patch("diffusion_model.skip_mmdit", skip_mmdit)
    m.add_object_patch("diffusion_model.skip_dit", skip_dit)
    ran = 4 - len(skip_mmdit) - len(skip_dit)
    last_double = max(i for i in range(2) if i not in skip_mmdit)
    outputs = []
    hook = m.model.diffusion_model.double_blocks[last_double].register_forward_hook(
        lambda _m, _i, out: outputs.append(out[0][0].detach().clone()))
    try:
        base = sample(m, v.cond(1), v.cond(2), steps=10, cfg=2.0, latent=v.latent())
        assert len(outputs) == 10
        unskipped = sample(v.make(0), v.cond(1), v.cond(2), steps=10, cfg=2.0, latent=v.latent())
        assert not torch.equal(base, unskipped)                 # the skips took effect
        patched = apply_node(m, clusters=4)
        counter = AttentionCounter()
        counter.install(patched)
        outputs.clear()
        out = sample(patched, v.cond(1), v.cond(2), steps=10, cfg=2.0, latent=v.latent())
    finally:
        hook.remove()
    s = last_summary(patched)
    assert "disabled" not in s, s.get("disabled")
    assert (s["full_steps"], s["cached_steps"]) == (4, 6)
    assert counter.calls == 4 * ran and len(outputs) == 4       # skipped blocks and cached steps: no attention
    assert s["tokens_per_cached_step"] == {"img": 4, "txt": 4}
    assert torch.isfinite(out).all() and psnr(out, base) > 20
    snapshot = patched.model_options["transformer_options"]["clusca"].last_clusters
    assert snapshot["step"] == max(s["full_step_indices"]) and snapshot["labels"].shape == (64,)
    features = outputs[-1][-64:]                                 # first row (the first slot), image tokens
    labels = snapshot["labels"]
    # the labels are a K-means fixed point on that block output: every token is nearest to its own cluster's mean
    means = torch.stack([features[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    nearest = torch.cdist(features, means).argmin(1)
    assert float((nearest == labels).float().mean()) >= 0.98
