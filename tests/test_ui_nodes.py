"""The pack's UI side without a server: the cluster map node, the stats listener, the help pages."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from devkit.comfy_env import load_pack, pack_module
from devkit.tiny_models import flux_cond, sample, tiny_flux, tiny_hunyuan_video, hunyuan_video_cond

load_pack()
import nodes  # noqa: E402  (ComfyUI's module, after bootstrap)

REPO = Path(__file__).resolve().parents[1]
cluster_map = pack_module("nodes.cluster_map")
ui_stats = pack_module("nodes.ui_stats")
patching = pack_module("nodes.patching")


def apply(model, **kw):
    return nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=model, **kw).result[0]


def map_node(**kw):
    return nodes.NODE_CLASS_MAPPINGS["ClusCaClusterMap"].execute(**kw).result[0]


# -- cluster map ------------------------------------------------------------------------------------------

def test_cluster_map_after_a_flux_run_matches_the_clustering():
    model = apply(tiny_flux(0), clusters=5)
    out = sample(model, flux_cond(1), flux_cond(2), steps=8, cfg=2.0, height=16, width=12)
    snap = model.model_options["transformer_options"]["clusca"].last_clusters
    assert snap["grid"] == (1, 8, 6) and snap["num_clusters"] == 5
    image = torch.rand(1, 80, 60, 3)
    img = map_node(model=model, samples={"samples": out}, image=image)
    assert img.shape == (1, 80, 60, 3) and 0 <= float(img.min()) and float(img.max()) <= 1
    # every token is a 10x10 block of one colour: the colour of its cluster
    palette = cluster_map.cluster_colors(5)
    labels = snap["labels"].reshape(8, 6)
    for r in range(8):
        for c in range(6):
            block = img[0, r * 10:(r + 1) * 10, c * 10:(c + 1) * 10]
            assert torch.allclose(block, palette[labels[r, c]].expand_as(block))
    # without an image: 8 pixels per latent pixel
    assert map_node(model=model, samples={"samples": out}).shape == (1, 128, 96, 3)


def test_cluster_map_errors_are_clear():
    plain = tiny_flux(0)
    with pytest.raises(ValueError, match="has no ClusCa"):
        map_node(model=plain, samples={"samples": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="no sampling run"):
        map_node(model=apply(plain), samples={"samples": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="clusters = 0"):
        map_node(model=apply(plain, clusters=0), samples={"samples": torch.zeros(1, 16, 8, 8)})


def test_cluster_map_follows_a_clone_made_after_apply_clusca():
    """A model cloned after Apply ClusCa (e.g. by a LoRA loader) runs the sampler; the map may still be fed
    Apply ClusCa's own output."""
    patched = apply(tiny_flux(0), seed=7)
    patched.model_options["transformer_options"]["clusca"].node_id = "77"
    later = patched.clone()
    out = sample(later, flux_cond(1), flux_cond(2), steps=8, cfg=2.0, height=8, width=8)
    assert patched.model_options["transformer_options"]["clusca"].last_clusters is None
    img = map_node(model=patched, samples={"samples": out})
    assert img.shape == (1, 64, 64, 3)


def test_two_clones_of_one_patched_model_keep_their_own_results():
    """ComfyUI 0.33's clone() copies transformer_options as plain dicts: every clone must still get its own
    holder, or a cluster map fed one branch shows the other branch's run."""
    patched = apply(tiny_flux(0), seed=7)
    a, b = patched.clone(), patched.clone()
    holder = lambda m: m.model_options["transformer_options"]["clusca"]   # noqa: E731
    assert holder(a) is not holder(b) and holder(a) is not holder(patched)
    assert holder(a).config == holder(b).config == holder(patched).config
    out = sample(a, flux_cond(1), flux_cond(2), steps=8, cfg=2.0, height=8, width=8)
    assert holder(a).last_summary is not None and holder(a).last_clusters is not None
    assert holder(b).last_summary is None and holder(b).last_clusters is None
    assert holder(b).descendant_clusters is None
    with pytest.raises(ValueError, match="no sampling run"):
        map_node(model=b, samples={"samples": out})
    # the parent (Apply ClusCa's own output) shows the run of a model derived from it
    assert holder(patched).last_summary is None
    assert map_node(model=patched, samples={"samples": out}).shape == map_node(model=a, samples={"samples": out}).shape


def test_video_gives_one_map_per_frame_and_follows_the_decoded_frames():
    model = apply(tiny_hunyuan_video(0), clusters=4, cluster_per_frame=True)
    out = sample(model, hunyuan_video_cond(1), hunyuan_video_cond(2), steps=8, cfg=2.0,
                 latent=torch.zeros(1, 16, 3, 8, 8))
    snap = model.model_options["transformer_options"]["clusca"].last_clusters
    assert snap["grid"] == (3, 4, 4)
    maps = map_node(model=model, samples={"samples": out})
    assert maps.shape == (3, 64, 64, 3)
    # a causal VAE decodes 3 latent frames to 1 + 4 * 2 = 9 frames: 0 | 1-4 | 5-8
    video = map_node(model=model, samples={"samples": out}, image=torch.rand(9, 32, 32, 3))
    assert video.shape == (9, 32, 32, 3)
    small = map_node(model=model, samples={"samples": out}, image=torch.rand(3, 32, 32, 3))
    for j, f in enumerate([0, 1, 1, 1, 1, 2, 2, 2, 2]):
        assert torch.equal(video[j], small[f])
    # per-frame clustering: every frame uses its own clusters
    per_frame = snap["labels"].reshape(3, -1)
    assert all(set(per_frame[i].tolist()).isdisjoint(per_frame[i + 1].tolist()) for i in range(2))


def test_render_handles_any_cluster_count_and_odd_sizes():
    labels = torch.arange(12) % 7
    img = cluster_map.render_cluster_map({"labels": labels, "grid": (1, 3, 4), "num_clusters": 7}, 7, 9)
    assert img.shape == (1, 7, 9, 3)
    assert len({tuple(p.tolist()) for p in img.reshape(-1, 3)}) == 7
    colors = cluster_map.cluster_colors(300)
    assert len({tuple(c.tolist()) for c in colors}) == 300
    with pytest.raises(ValueError, match="labels"):
        cluster_map.render_cluster_map({"labels": labels, "grid": (1, 5, 5)}, 8, 8)


# -- stats sent at the run's end ---------------------------------------------------------------------------

def test_stats_are_sent_from_the_runs_end_and_are_a_no_op_without_a_server(monkeypatch):
    assert not hasattr(patching, "RUN_LISTENERS")         # explicit calls, no module-global listeners
    assert ui_stats.prompt_server() is None
    sent = []
    real = patching.send_stats
    monkeypatch.setattr(patching, "send_stats", lambda template, summary: sent.append(summary) or real(template, summary))
    model = apply(tiny_flux(0))
    sample(model, flux_cond(1), flux_cond(2), steps=6, cfg=2.0, height=8, width=8)
    holder = model.model_options["transformer_options"]["clusca"]
    assert sent == [holder.last_summary]
    assert ui_stats.send_stats(holder, holder.last_summary) is False


def test_stats_message_is_plain_json():
    import json
    holder = pack_module("nodes.holder").ClusCaHolder(pack_module("clusca_core.config").ClusCaConfig(), "flux", "12")
    summary = {"family": "FLUX.1", "steps": 10, "estimated_flops_speedup": math.inf, "x": torch.tensor(2.5),
               "tokens_per_cached_step": {"img": 16}, "geometry": {"blocks": (2, 4)}, "node_id": None}
    msg = ui_stats.stats_message(holder, summary)
    assert msg["node"] == "12"
    text = json.dumps(msg, allow_nan=False)
    assert json.loads(text)["summary"] == {"family": "FLUX.1", "steps": 10, "estimated_flops_speedup": None,
                                           "x": 2.5, "tokens_per_cached_step": {"img": 16},
                                           "geometry": {"blocks": [2, 4]}, "node_id": None}


def test_stats_message_carries_the_probe_error_of_every_cached_step_in_verbose_mode():
    import json
    m = apply(tiny_flux(0), fresh_interval=3, warmup_steps=1, clusters=4, verbose=True)
    sample(m, flux_cond(1), flux_cond(2), steps=8, cfg=1.0)
    holder = m.model_options["transformer_options"]["clusca"]
    summary = holder.last_summary
    message = json.loads(json.dumps(ui_stats.stats_message(holder, summary), allow_nan=False))
    probes = message["summary"]["probe_errors"]
    assert [p[0] for p in probes] == sorted(set(range(8)) - set(summary["full_step_indices"]))
    assert all(isinstance(p[2], float) and math.isfinite(p[2]) and p[2] >= 0 for p in probes)


# -- help pages -------------------------------------------------------------------------------------------

def pack_nodes():
    return list(pack_module("nodes").NODES)


@pytest.mark.parametrize("cls", pack_nodes(), ids=lambda c: c.GET_SCHEMA().node_id)
def test_every_node_has_a_help_page_naming_its_inputs(cls):
    schema = cls.GET_SCHEMA()
    page = REPO / "web" / "docs" / f"{schema.node_id}.md"
    assert page.exists(), f"no help page {page.relative_to(REPO)}"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {schema.display_name}\n")
    assert re.search(rf"\*\*Category:\*\* {re.escape(schema.category)}\b", text)
    assert schema.category.split("/")[0] == "ClusCa"
    for inp in schema.inputs:
        assert f"`{inp.id}`" in text, f"{schema.node_id}: input {inp.id} is not described in its help page"
        assert getattr(inp, "tooltip", None), f"{schema.node_id}: input {inp.id} has no tooltip"
