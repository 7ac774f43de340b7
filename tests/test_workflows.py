"""The shipped example workflows (``workflows/*.json``, UI format) against real ComfyUI prompt validation.

Every workflow is converted to an API prompt by ``devkit.workflow_api`` (widget values matched to each node
class's input order) and checked by ComfyUI's own ``execution.validate_prompt``: unknown node types, bad links,
type mismatches and out-of-range values all fail. Model files cannot exist in CI, so the model names a
workflow declares on its loaders (``properties.models``, which the page also uses for its missing-models
dialog) are created as empty placeholder files in a temporary models folder registered with ``folder_paths``;
a separate test checks that without them, the *only* errors are those model-file combos. A workflow whose core
nodes a tree does not have (LTX-2's on 0.3.75) is skipped there, with the nodes named, when that tree is older
than the one it is generated on (``devkit.make_workflows.SPECS``); anywhere else a missing node fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from devkit.comfy_env import comfyui_version
from devkit.make_workflows import SPECS
from devkit.workflow_api import (DYNAMIC_COMBO, FRONTEND_ONLY, MODE_BYPASS, MODE_NEVER, WorkflowError, find_nodes,
                                 load_all_nodes, load_workflow, object_info_in_process, workflow_to_prompt)

load_all_nodes()
import execution  # noqa: E402  (ComfyUI's, after bootstrap)
import folder_paths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = REPO / "workflows"
WORKFLOW_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
EXPECTED = {"flux_dev_text_to_image", "flux_kontext_edit", "dit_xl2_class_to_image", "hunyuan_video_text_to_video",
            "tiny_reference_model", "qwen_image_text_to_image", "qwen_image_edit_2509", "flux2_klein_text_to_image",
            "z_image_turbo_text_to_image", "wan22_ti2v_5b_text_to_video", "wan22_14b_image_to_video",
            "ltx2_text_to_video"}
MAX_THUMBNAIL_BYTES = 100 * 1024
#: the nodes that take the sampled model (samplers and guiders)
SAMPLING_NODES = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider", "BasicGuider", "DualCFGGuider"}
#: workflows without a cluster map, and why
WITHOUT_CLUSTER_MAP = {"ltx2_text_to_video": "ClusCa runs LTX-2's audio-video transformer unchanged: no clusters to show"}


def version(v: str) -> tuple:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def skip_where_the_tree_lacks_core_nodes(path, workflow, object_info):
    """Skip a workflow whose node types this tree does not have, when it is older than the tree the workflow is
    generated on; fail anywhere else (a misspelt or removed node)."""
    missing = sorted({n["type"] for n in workflow["nodes"]
                      if n["type"] not in object_info and n["type"] not in FRONTEND_ONLY})
    if not missing:
        return
    needs = SPECS[path.stem].comfyui
    assert version(comfyui_version()) < version(needs), \
        f"{path.name}: node types {missing} are missing on ComfyUI {comfyui_version()} (generated on {needs})"
    pytest.skip(f"{path.stem} needs ComfyUI {needs}: core nodes {', '.join(missing)} are not in {comfyui_version()}")


@pytest.fixture(scope="module")
def object_info():
    return object_info_in_process()


def declared_models(workflow: dict) -> list:
    return [m for n in workflow["nodes"] for m in (n.get("properties") or {}).get("models") or []]


@pytest.fixture
def placeholder_models(tmp_path):
    """Empty files for every model the workflows declare, in a models folder ComfyUI searches."""
    root = tmp_path / "models"
    added = []
    for path in WORKFLOW_FILES:
        for m in declared_models(load_workflow(path)):
            folder = root / m["directory"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / m["name"]).write_bytes(b"")
            if (m["directory"], str(folder)) not in added:
                folder_paths.add_model_folder_path(m["directory"], str(folder))
                added.append((m["directory"], str(folder)))
    yield root
    for directory, folder in added:
        paths = folder_paths.folder_names_and_paths[directory][0]
        if folder in paths:
            paths.remove(folder)


def validate(prompt: dict):
    ok, error, outputs, node_errors = asyncio.run(execution.validate_prompt("test-workflows", prompt, None))
    return ok, error, outputs, node_errors


def describe(error, node_errors) -> str:
    lines = [json.dumps(error)[:500] if error else ""]
    for nid, e in node_errors.items():
        for r in e["errors"]:
            lines.append(f"node {nid} ({e['class_type']}): {r['type']}: {r['message']}: {r['details']}")
    return "\n".join(lines)


def test_every_expected_workflow_is_shipped_with_a_small_thumbnail():
    names = {p.stem for p in WORKFLOW_FILES}
    assert EXPECTED <= names, f"missing workflows: {sorted(EXPECTED - names)}"
    from PIL import Image
    for path in WORKFLOW_FILES:
        thumbs = [t for t in (path.with_suffix(".jpg"), path.with_suffix(".png")) if t.exists()]
        assert thumbs, f"{path.name} has no thumbnail beside it"
        assert thumbs[0].stat().st_size <= MAX_THUMBNAIL_BYTES, f"{thumbs[0].name} is larger than 100 KiB"
        with Image.open(thumbs[0]) as im:
            assert im.size[0] >= 128 and im.size[1] >= 96


def test_every_shipped_workflow_has_a_generator_entry():
    """Every file in workflows/ is written by devkit.make_workflows (and so checked by its --check)."""
    assert {p.stem for p in WORKFLOW_FILES} == set(SPECS)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflow_passes_comfyui_validation(path, object_info, placeholder_models):
    workflow = load_workflow(path)
    skip_where_the_tree_lacks_core_nodes(path, workflow, object_info)
    prompt = workflow_to_prompt(workflow, object_info)
    ok, error, outputs, node_errors = validate(prompt)
    assert ok and not node_errors, describe(error, node_errors)
    # every output node of the workflow is a validated output of the prompt
    output_nodes = {str(n["id"]) for n in workflow["nodes"] if object_info.get(n["type"], {}).get("output_node")}
    assert output_nodes and output_nodes == set(outputs)
    # the new ClusCa node is in place, between the model and every sampler / guider, and (where the model has
    # clusters) a cluster map after the sampler, fed a ClusCa model
    types = {v["class_type"] for v in prompt.values()}
    assert "ClusCa" in types and "ApplyClusCa" not in types
    samplers = [node for node in prompt.values() if node["class_type"] in SAMPLING_NODES]
    assert samplers
    for node in samplers:
        assert prompt[node["inputs"]["model"][0]]["class_type"] == "ClusCa", node
    maps = [node for node in prompt.values() if node["class_type"] == "ClusCaClusterMap"]
    assert bool(maps) == (path.stem not in WITHOUT_CLUSTER_MAP)
    for node in maps:
        assert prompt[node["inputs"]["model"][0]]["class_type"] == "ClusCa"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.stem for p in WORKFLOW_FILES])
def test_workflow_model_files_are_declared_and_named_in_its_note(path, object_info):
    """Without the model files, only the declared model-file combos are refused; each is named in a Note."""
    workflow = load_workflow(path)
    skip_where_the_tree_lacks_core_nodes(path, workflow, object_info)
    declared = {m["name"] for m in declared_models(workflow)}
    assert declared or path.stem == "tiny_reference_model", "the loaders declare no model files"   # tiny: bundled
    for m in declared_models(workflow):
        assert m["url"].startswith("https://") and m["url"].endswith("/" + m["name"]), m
    notes = "\n".join(str(v) for n in find_nodes(workflow, "Note") for v in n.get("widgets_values") or [])
    for name in declared:
        assert name in notes, f"{name} is not named in the workflow's Note"
    _, _, _, node_errors = validate(workflow_to_prompt(workflow, object_info))
    refused = set()
    for e in node_errors.values():
        for r in e["errors"]:
            assert r["type"] == "value_not_in_list", describe(None, node_errors)
            refused.add(r["extra_info"]["received_value"])
    assert refused <= declared, f"refused values that are no declared model file: {sorted(refused - declared)}"


# -- the converter itself: what it must refuse and how it maps widgets ----------------------------------

@pytest.fixture
def flux_workflow():
    return load_workflow(WORKFLOW_DIR / "flux_dev_text_to_image.json")


def node_of(workflow, node_type):
    return find_nodes(workflow, node_type)[0]


def test_widget_values_follow_the_input_order_and_skip_control_values(flux_workflow, object_info):
    prompt = workflow_to_prompt(flux_workflow, object_info)
    ks = prompt[str(node_of(flux_workflow, "KSampler")["id"])]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["denoise"]) == \
        (42, 50, 1.0, "euler", "simple", 1.0)
    cc = prompt[str(node_of(flux_workflow, "ClusCa")["id"])]["inputs"]
    assert (cc["speedup"], cc["start_percent"], cc["end_percent"]) == (4.0, 0.0, 1.0)
    assert isinstance(cc["model"], list)


def test_unknown_node_type_is_refused(flux_workflow, object_info):
    flux_workflow["nodes"].append({"id": 99, "type": "NoSuchNode", "mode": 0, "inputs": [], "outputs": [],
                                   "widgets_values": []})
    with pytest.raises(WorkflowError, match="NoSuchNode"):
        workflow_to_prompt(flux_workflow, object_info)


def test_link_to_a_missing_node_is_refused(flux_workflow, object_info):
    flux_workflow["links"][0][1] = 999
    with pytest.raises(WorkflowError, match="999"):
        workflow_to_prompt(flux_workflow, object_info)


def test_validation_catches_out_of_range_values_and_type_mismatches(flux_workflow, object_info, placeholder_models):
    bad = copy.deepcopy(flux_workflow)
    node_of(bad, "KSampler")["widgets_values"][2] = 0             # steps below 1
    node_of(bad, "ClusCa")["widgets_values"][1] = 1.5             # start_percent above 1
    ok, _, _, node_errors = validate(workflow_to_prompt(bad, object_info))
    reasons = [(r["type"], r["details"]) for e in node_errors.values() for r in e["errors"]]
    assert not ok
    assert ("value_smaller_than_min", "steps") in [(t, d.split(":")[0]) for t, d in reasons]
    # ClusCa checks its own inputs (validate_inputs), which replaces ComfyUI's range check
    assert any(t == "custom_validation_failed" and "start_percent" in d for t, d in reasons)
    mismatched = copy.deepcopy(flux_workflow)
    ks = node_of(mismatched, "KSampler")
    vae = node_of(mismatched, "VAELoader")
    link = next(lk for lk in mismatched["links"] if lk[3] == ks["id"] and lk[5] == "LATENT")
    link[1], link[2] = vae["id"], 0                               # a VAE into latent_image
    _, _, _, node_errors = validate(workflow_to_prompt(mismatched, object_info))
    assert any(r["type"] == "return_type_mismatch" for e in node_errors.values() for r in e["errors"])


def test_bypass_bridges_by_type_and_mute_drops(flux_workflow, object_info):
    cc = node_of(flux_workflow, "ClusCa")
    unet = node_of(flux_workflow, "UNETLoader")
    cmap = node_of(flux_workflow, "ClusCaClusterMap")
    prompt = workflow_to_prompt(flux_workflow, object_info, modes={cc["id"]: MODE_BYPASS, cmap["id"]: MODE_NEVER})
    ks = prompt[str(node_of(flux_workflow, "KSampler")["id"])]
    assert str(cc["id"]) not in prompt and str(cmap["id"]) not in prompt
    assert ks["inputs"]["model"] == [str(unet["id"]), 0]
    preview = prompt[str(node_of(flux_workflow, "PreviewImage")["id"])]
    assert "images" not in preview["inputs"]     # its source is muted


def test_reroute_and_primitive_nodes(flux_workflow, object_info):
    wf = flux_workflow
    ks = node_of(wf, "KSampler")
    decode = node_of(wf, "VAEDecode")
    # a Reroute between the sampler and the decoder
    link = next(lk for lk in wf["links"] if lk[3] == decode["id"] and lk[5] == "LATENT")
    wf["nodes"].append({"id": 50, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 500}],
                        "outputs": [{"name": "", "type": "LATENT", "links": [link[0]]}]})
    wf["links"].append([500, ks["id"], 0, 50, 0, "LATENT"])
    link[1], link[2] = 50, 0
    # a PrimitiveNode driving the sampler's steps (a widget converted to an input)
    wf["nodes"].append({"id": 51, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [501], "widget": {"name": "steps"}}],
                        "widgets_values": [12, "fixed"]})
    ks["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 501})
    wf["links"].append([501, 51, 0, ks["id"], len(ks["inputs"]) - 1, "INT"])
    prompt = workflow_to_prompt(wf, object_info)
    assert prompt[str(decode["id"])]["inputs"]["samples"] == [str(ks["id"]), 0]
    assert prompt[str(ks["id"])]["inputs"]["steps"] == 12
    assert "50" not in prompt and "51" not in prompt


# -- what the new workflows must do ---------------------------------------------------------------------

def test_wan22_experts_each_get_a_clusca_node_and_half_of_one_schedule(object_info, placeholder_models):
    """Wan 2.2 14B: each expert model through its own ClusCa node into a KSampler Advanced; the high-noise expert
    samples the first half of the schedule and hands its leftover noise to the low-noise expert (ComfyUI's
    template)."""
    workflow = load_workflow(WORKFLOW_DIR / "wan22_14b_image_to_video.json")
    prompt = workflow_to_prompt(workflow, object_info)
    samplers = sorted((n for n in prompt.values() if n["class_type"] == "KSamplerAdvanced"),
                      key=lambda n: n["inputs"]["start_at_step"])
    assert len(samplers) == 2
    high, low = (s["inputs"] for s in samplers)
    loaders = []
    for s in (high, low):
        cc = prompt[s["model"][0]]
        assert cc["class_type"] == "ClusCa"
        shift = prompt[cc["inputs"]["model"][0]]
        assert shift["class_type"] == "ModelSamplingSD3"
        loaders.append(prompt[shift["inputs"]["model"][0]]["inputs"]["unet_name"])
    assert ["high_noise" in loaders[0], "low_noise" in loaders[1]] == [True, True]
    assert high["steps"] == low["steps"] and high["end_at_step"] == low["start_at_step"] == high["steps"] // 2
    assert (high["add_noise"], high["return_with_leftover_noise"]) == ("enable", "enable")
    assert (low["add_noise"], low["return_with_leftover_noise"]) == ("disable", "disable")
    assert low["latent_image"][0] == next(k for k, v in prompt.items() if v["inputs"] is high)
    assert low["end_at_step"] >= low["steps"]
    ok, error, _, node_errors = validate(prompt)
    assert ok, describe(error, node_errors)


def test_dynamic_combo_and_multitype_widgets_reach_the_prompt(object_info):
    """Widget values of SaveVideo (a dynamic combo with a nested codec on 0.33) and of an input of several
    types with a widget (LTX-2's frame_rate) go to the inputs they belong to."""
    hunyuan = load_workflow(WORKFLOW_DIR / "hunyuan_video_text_to_video.json")
    prompt = workflow_to_prompt(hunyuan, object_info)
    save = next(n["inputs"] for n in prompt.values() if n["class_type"] == "SaveVideo")
    assert save["filename_prefix"] == "ClusCa/hunyuan_video" and save["format"] == "auto"
    dynamic = object_info["SaveVideo"]["input"]["required"]["format"][0] == DYNAMIC_COMBO
    assert save["format.codec" if dynamic else "codec"] == "auto"
    if "LTXVEmptyLatentAudio" in object_info:
        ltx = workflow_to_prompt(load_workflow(WORKFLOW_DIR / "ltx2_text_to_video.json"), object_info)
        audio = next(n["inputs"] for n in ltx.values() if n["class_type"] == "LTXVEmptyLatentAudio")
        assert (audio["frames_number"], audio["frame_rate"], audio["batch_size"]) == (97, 24.0, 1)
