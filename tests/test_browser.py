"""What a ComfyUI user sees, on a real server and in a real browser.

One real headless ComfyUI server (``devkit.comfy_server``: the selected tree's ``main.py --cpu`` on 127.0.0.1,
this pack as a custom node) is started for the module with the page frontend that tree pins, and always
stopped. The tests:

- HTTP/websocket: the tiny reference workflow runs; the run's stats arrive as a ``clusca.stats`` message for
  its ClusCa node, with the speed-up asked reached; the cluster map is written with the decoded image's size;
  bypassed, no stats are sent; the cluster map fed a model without ClusCa fails with its clear message; a graph
  saved with the deprecated Apply ClusCa node (``tests/data/saved_apply_clusca_graph.json``, the tiny workflow
  as shipped before the ClusCa node) runs unchanged, with the full and cached steps its settings always gave
  (the paper's fixed schedule, computed here with ``clusca_core.schedule.build_full_step_mask``); help pages,
  the extension script and the workflows folder are served.
- Browser, on every page frontend that applies to the tree (``COMFYUI=0.3.75``: its pinned 1.32.9;
  ``COMFYUI=0.33.0``: its pinned 1.49.6 and the newest published, 1.58.1, each on a server of its own) and in
  both ways those frontends render nodes (``Comfy.VueNodes.Enabled``, "Nodes 2.0": off = classic canvas
  nodes, the default of all three; on = Vue/DOM nodes). Headless Chromium (Debian's /usr/bin/chromium, driven
  by Playwright, no browser download) opens the page. The page is driven through its own JS API where the
  frontends' UIs differ (``app.graph``, ``app.loadGraphData``, the command registry), and through what a user
  clicks and presses where they agree (the Run button, Ctrl+B, the template browser's cards). Classic: the
  node library search finds "ClusCa" and adds it; the template browser lists the pack's workflows under
  the pack's name and its card loads the tiny workflow. Both: the workflow is queued with the Run button, the
  stats panel appears on the ClusCa node (checked in the pixels of a screenshot: the panel's fill colour inside
  the node's rectangle, and its text, with the speed-up asked and reached), bypassing the node (Ctrl+B) removes
  it, and a new run shows the new run's
  stats; classic also shows the cluster map's error while the node is bypassed, and switching to Nodes 2.0
  with the panel shown brings it back on the Vue-rendered node. No console errors or warnings come from our
  extension. Screenshots go to ``out/browser/<frontend>/<classic|vue>/``.

The browser tests need Chromium: set ``CLUSCA_SKIP_BROWSER=1`` to skip them locally. In CI (``CI`` set) they
never skip: a missing browser fails them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import io
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from devkit.comfy_env import COMFYUI_VERSIONS, NEWEST_FRONTEND, PINNED_FRONTEND, comfyui_version
from devkit.comfy_server import PACK_NAME, ComfyClient, ComfyServer, ServerError
from devkit.workflow_api import MODE_BYPASS, MODE_NEVER, find_nodes, load_workflow, workflow_to_prompt

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out"
SHOTS = OUT / "browser"
WORKFLOW_PATH = REPO / "workflows" / "tiny_reference_model.json"
#: the tiny workflow as saved with the deprecated Apply ClusCa node (workflows/tiny_reference_model.json at d9cf440)
SAVED_APPLY_CLUSCA_GRAPH = REPO / "tests" / "data" / "saved_apply_clusca_graph.json"
#: the speed-up the tiny workflow's ClusCa node asks for
TINY_SPEEDUP = 4.0
CHROMIUM = os.environ.get("CLUSCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: the page's settings for a fresh user: no first-run template browser, no missing-model dialogs
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
            "Comfy.Workflow.ShowMissingNodesWarning": True}




def page_frontends() -> list:
    """The page frontends the browser tests run on: the one the ComfyUI tree pins, and on the newest tested
    tree also the newest published frontend package."""
    version = comfyui_version()
    frontends = [PINNED_FRONTEND.get(version, NEWEST_FRONTEND)]
    if version == COMFYUI_VERSIONS[-1] and NEWEST_FRONTEND not in frontends:
        frontends.append(NEWEST_FRONTEND)
    return frontends


FRONTENDS = page_frontends()
PINNED = FRONTENDS[0]


def start_server(tmp_path_factory, frontend):
    base = tmp_path_factory.mktemp("comfy-server")   # private: several test sessions may run at once
    srv = ComfyServer(base, settings=SETTINGS, pack_dir=os.environ.get("CLUSCA_PACK_DIR") or None, frontend=frontend)
    try:
        with srv:
            yield srv
    finally:
        (SHOTS / frontend).mkdir(parents=True, exist_ok=True)
        (SHOTS / frontend / "server.log").write_text(srv.log_text(), encoding="utf-8")   # a test artefact


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server with the tree's pinned frontend (the HTTP tests and that frontend's browser tests)."""
    yield from start_server(tmp_path_factory, PINNED)


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.fixture
def workflow():
    return load_workflow(WORKFLOW_PATH)


def node_id(workflow, node_type, index=0) -> str:
    return str(find_nodes(workflow, node_type)[index]["id"])


def save_node_fed_by(workflow, node_type) -> str:
    src = {n["id"] for n in find_nodes(workflow, node_type)}
    link_ids = {lk[0] for lk in workflow["links"] if lk[1] in src}
    for n in find_nodes(workflow, "SaveImage"):
        if any(i.get("link") in link_ids for i in n["inputs"]):
            return str(n["id"])
    raise AssertionError(f"no SaveImage fed by {node_type}")


TEST_STEPS = 12   # fewer than the shipped 30, to keep the suite fast; at 4x: 3 full + 9 cached steps


def with_seed(workflow, seed):
    """The workflow with its own sampler seed (nothing served from ComfyUI's cache) and TEST_STEPS steps."""
    wf = copy.deepcopy(workflow)
    values = find_nodes(wf, "KSampler")[0]["widgets_values"]
    values[0], values[2] = seed, TEST_STEPS     # seed, control_after_generate, steps, ...
    return wf


def run(server, *prompts, timeout=300):
    async def go():
        async with ComfyClient(server) as client:
            return [await client.run(p, timeout) for p in prompts], client
    return asyncio.run(go())


# -- over HTTP and the websocket -----------------------------------------------------------------------

def test_stats_message_and_cluster_map_after_a_run(server, object_info, workflow):
    from PIL import Image
    wf = with_seed(workflow, 101)
    (rec,), client = run(server, workflow_to_prompt(wf, object_info))
    cc = node_id(wf, "ClusCa")
    assert len(rec.stats) == 1, rec.stats
    msg = rec.stats[0]
    assert msg["node"] == cc and msg["prompt_id"] == rec.prompt_id
    assert msg["sampler_node"] == node_id(wf, "KSampler")
    s = msg["summary"]
    assert s["steps"] == TEST_STEPS == s["full_steps"] + s["cached_steps"] and s["cached_steps"] > 0
    # the speed-up asked is the one reached: steps / speed-up full steps
    assert s["speedup_asked"] == TINY_SPEEDUP and s["full_steps"] == round(TEST_STEPS / TINY_SPEEDUP)
    assert s["speedup_reached"] == pytest.approx(TEST_STEPS / s["full_steps"])
    assert s["estimated_flops_speedup"] > 1 and s["sampling_seconds"] > 0 and s["peak_cache_bytes"] > 0
    assert s["node_id"] == cc
    image = rec.images(save_node_fed_by(wf, "ClusCaReferenceDecode"))
    cmap = rec.images(save_node_fed_by(wf, "ClusCaClusterMap"))
    assert len(image) == 1 and len(cmap) == 1
    with Image.open(client.image_path(image[0])) as im, Image.open(client.image_path(cmap[0])) as mp:
        assert mp.size == im.size
        colours = mp.convert("RGB").getcolors(maxcolors=4096)
        assert colours is not None and 2 <= len(colours) <= 4096


def test_no_stats_when_clusca_is_bypassed(server, object_info, workflow):
    wf = with_seed(workflow, 102)
    cmap = find_nodes(wf, "ClusCaClusterMap")[0]["id"]
    muted = {cmap: MODE_NEVER, int(save_node_fed_by(wf, "ClusCaClusterMap")): MODE_NEVER}
    prompt = workflow_to_prompt(wf, object_info, modes={int(node_id(wf, "ClusCa")): MODE_BYPASS, **muted})
    (rec,), _ = run(server, prompt)
    assert rec.stats == []
    assert rec.images(save_node_fed_by(wf, "ClusCaReferenceDecode"))


def test_cluster_map_without_clusca_fails_clearly(server, object_info, workflow):
    wf = with_seed(workflow, 103)
    prompt = workflow_to_prompt(wf, object_info)
    cmap = node_id(wf, "ClusCaClusterMap")
    prompt[cmap]["inputs"]["model"] = [node_id(wf, "ClusCaReferenceModelLoader"), 0]
    with pytest.raises(ServerError, match="has no ClusCa"):
        run(server, prompt)


def legacy_full_step_mask(inputs: dict, steps: int, apply_clusca_info: dict, reference_settings: dict) -> list:
    """The schedule Apply ClusCa has always run for these inputs: the paper's fixed schedule with its interval and
    warm-up, replaced by the family's reference settings when the five schedule inputs are all left at their
    defaults (web/docs/ApplyClusCa.md)."""
    from clusca_core.schedule import build_full_step_mask
    assert inputs.get("preset", "custom") == "custom" and not inputs.get("target_speedup") \
        and not inputs.get("adaptive_threshold"), "this fixture holds the fixed schedule"
    assert (inputs["start_percent"], inputs["end_percent"]) == (0.0, 1.0), "this fixture caches the whole schedule"
    spec = apply_clusca_info["input"]["required"]
    fields = ("fresh_interval", "warmup_steps", "taylor_order", "clusters", "propagation_ratio")
    settings = {k: inputs[k] for k in fields}
    if reference_settings and all(inputs[k] == spec[k][1]["default"] for k in fields):
        settings.update(reference_settings)
    return build_full_step_mask(steps, settings["warmup_steps"], settings["fresh_interval"])


def test_a_graph_saved_with_apply_clusca_runs_with_its_old_schedule(server, object_info):
    """Issue 13: a graph saved with today's Apply ClusCa loads and runs unchanged: its node's stats arrive with
    the full and cached steps its settings always gave, and the image is written."""
    from devkit.comfy_env import pack_module
    saved = load_workflow(SAVED_APPLY_CLUSCA_GRAPH)
    (node,) = find_nodes(saved, "ApplyClusCa")
    assert not find_nodes(saved, "ClusCa") and object_info["ApplyClusCa"].get("deprecated")
    prompt = workflow_to_prompt(saved, object_info)    # as saved: its seed, its 30 steps
    (rec,), client = run(server, prompt)
    cc = str(node["id"])
    assert [m["node"] for m in rec.stats] == [cc], rec.stats
    s = rec.stats[0]["summary"]
    assert "speedup_asked" not in s                   # the fixed schedule, not the speed-up controller
    family = next(f for f in pack_module("nodes.families").FAMILIES if f.name == s["family"])
    steps = prompt[node_id(saved, "KSampler")]["inputs"]["steps"]
    expected = legacy_full_step_mask(prompt[cc]["inputs"], steps, object_info["ApplyClusCa"],
                                     dict(family.reference_settings))
    assert s["steps"] == steps == 30
    assert s["full_step_indices"] == [i for i, full in enumerate(expected) if full]
    assert (s["full_steps"], s["cached_steps"]) == (sum(expected), steps - sum(expected)) == (8, 22)
    image = rec.images(save_node_fed_by(saved, "ClusCaReferenceDecode"))
    assert len(image) == 1 and client.image_path(image[0]).stat().st_size > 0
    assert len(rec.images(save_node_fed_by(saved, "ClusCaClusterMap"))) == 1


def test_pack_assets_are_served(server):
    js = server.get_bytes(f"/extensions/{PACK_NAME}/js/clusca_stats.js").decode()
    assert "clusca.stats" in js
    for name in server.object_info():
        if name.startswith("ClusCa") or name == "ApplyClusCa":
            page = server.get_bytes(f"/extensions/{PACK_NAME}/docs/{name}.md").decode()
            assert page.startswith("# "), name
    assert set(WORKFLOW_NAMES) <= set(server.get_json("/workflow_templates")[PACK_NAME])
    served = json.loads(server.get_bytes(f"/api/workflow_templates/{PACK_NAME}/tiny_reference_model.json"))
    assert served["nodes"] == load_workflow(WORKFLOW_PATH)["nodes"]


# -- in the browser -------------------------------------------------------------------------------------

APP = "(window.app ?? window.comfyAPI.app.app)"
VUE_SETTING = "Comfy.VueNodes.Enabled"
RENDERINGS = ("classic", "vue")
#: the panel's fill colour (web/js/clusca_stats.js PANEL_FILL), opaque in both kinds of panel
PANEL_RGB = (0x14, 0x3C, 0x46)
#: the pack's example workflows, as the template browser titles them (file names without .json)
WORKFLOW_NAMES = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module; every test opens a fresh browser context (a new profile)."""
    if os.environ.get("CLUSCA_SKIP_BROWSER") == "1" and not os.environ.get("CI"):
        pytest.skip("CLUSCA_SKIP_BROWSER=1")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    f"(apt-get install -y chromium; .ci/run does this)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module", params=FRONTENDS)
def page_server(request, chromium, tmp_path_factory):
    """The server for one page frontend: the module's server for the pinned one, else one of its own."""
    if request.param == PINNED:
        yield request.getfixturevalue("server")
    else:
        yield from start_server(tmp_path_factory, request.param)


@pytest.fixture
def browser_page(page_server, chromium, request):
    """A fresh page on ``page_server`` with nodes rendered as the test's ``rendering`` asks; its console lines
    are kept in ``page.console_lines`` and written next to the screenshots."""
    rendering = request.node.callspec.params["rendering"]
    shots = SHOTS / page_server.frontend_root.name / rendering
    shutil.rmtree(shots, ignore_errors=True)   # no screenshots left from an earlier run
    shots.mkdir(parents=True)
    page_server.set_setting(VUE_SETTING, rendering == "vue")
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    console = []
    try:
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(page_server.url + "/")
        # ready once the page has opened its first workflow (before that, it replaces whatever is loaded)
        page.wait_for_function(f"() => window.ClusCaStats && {APP}?.extensionManager?.workflow?.activeWorkflow",
                               timeout=120_000)
        page.console_lines = console
        page.frontend = page_server.frontend_root.name
        page.shots = shots
        page.rendering = rendering
        yield page
    finally:
        (shots / "console.log").write_text("\n".join(console), encoding="utf-8")
        context.close()


def count_nodes(page, node_type) -> int:
    return page.evaluate(f"t => {APP}.graph._nodes.filter(n => n.type === t).length", node_type)


def command(page, command_id):
    """Run one of the page's commands (the same registry its menus, buttons and keybindings use)."""
    page.evaluate(f"id => {APP}.extensionManager.command.execute(id)", command_id)


def node_screen_box(page, nid: int) -> dict:
    """The node's rectangle on the page (title bar included): its element when Vue renders it, else from the
    canvas transform."""
    if page.rendering == "vue":
        box = page.locator(f'[data-node-id="{nid}"]').first.bounding_box()
        assert box, f"node {nid} has no element on the page"
        return box
    return page.evaluate(f"""id => {{
        const app = {APP}; const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
        const r = app.canvas.canvas.getBoundingClientRect(); const th = 30;
        return {{x: r.left + (n.pos[0] + ds.offset[0]) * ds.scale, y: r.top + (n.pos[1] - th + ds.offset[1]) * ds.scale,
                 width: n.size[0] * ds.scale, height: (n.size[1] + th) * ds.scale}};
    }}""", nid)


def panel_screen_box(page, nid: int) -> dict:
    """Where the stats panel is on the page: the HTML panel's element (Vue nodes), or the rectangle the canvas
    widget last drew into, mapped from the node's coordinates to the page."""
    if page.rendering == "vue":
        panel = page.locator(f'[data-node-id="{nid}"] .clusca-stats-panel')
        panel.wait_for(state="visible", timeout=20_000)
        return panel.bounding_box()
    return page.evaluate(f"""id => {{
        const app = {APP}; const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
        const r = app.canvas.canvas.getBoundingClientRect();
        const [x, y, w, h] = window.ClusCaStats.shown().find(s => s.id === String(id)).drawnBox;
        return {{x: r.left + (n.pos[0] + x + ds.offset[0]) * ds.scale, y: r.top + (n.pos[1] + y + ds.offset[1]) * ds.scale,
                 width: w * ds.scale, height: h * ds.scale}};
    }}""", nid)


def pixel_shares(page, box: dict) -> tuple:
    """(share of pixels in the panel's fill colour, share of light text pixels) in that part of a screenshot."""
    from PIL import Image
    clip = {k: float(v) for k, v in box.items()}
    with Image.open(io.BytesIO(page.screenshot(clip=clip))) as im:
        pixels = list(im.convert("RGB").getdata())
    fill = sum(all(abs(c - p) <= 3 for c, p in zip(px, PANEL_RGB)) for px in pixels)
    light = sum(min(px) > 150 for px in pixels)
    return fill / len(pixels), light / len(pixels)


def inside(inner: dict, outer: dict, slack: float = 2.0) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


def wait_for_stats_shown(page, nid: int, kind: str, not_prompt=None, speedup=TINY_SPEEDUP) -> dict:
    """Wait until the node's panel shows the stats of the latest run (a prompt other than ``not_prompt``) and
    check that a user sees it: the panel's colour and text inside the node's rectangle on the page, with the
    speed-up asked (``speedup``) and the one the run reached."""
    page.wait_for_function("""([id, kind, old]) => {
        const n = window.ClusCaStats.shown().find(n => n.id === String(id));
        return n && n.stats && n.stats.prompt_id !== old && n.kind === kind && n.drawnPromptId === n.stats.prompt_id;
    }""", arg=[nid, kind, not_prompt], timeout=180_000)
    time.sleep(0.3)   # one more frame: the canvas widget has drawn, the page has laid out the HTML panel
    shown = next(n for n in page.evaluate("() => window.ClusCaStats.shown()") if n["id"] == str(nid))
    text = "\n".join(shown["drawn"])
    summary = shown["stats"]["summary"]
    assert f"{summary['full_steps']} full + {summary['cached_steps']} cached of {summary['steps']} steps" in text
    assert "tokens per cached step" in text and "est. speed-up" in text and "sampling" in text and "cache" in text
    assert summary["speedup_asked"] == speedup
    assert f"speed-up asked {speedup:.2f}x, reached {summary['speedup_reached']:.2f}x" in shown["drawn"], text
    panel, node = panel_screen_box(page, nid), node_screen_box(page, nid)
    assert panel["width"] > 100 and panel["height"] >= 4 * 16, panel
    assert inside(panel, node), (panel, node)          # on the node, which grew to hold it
    fill, light = pixel_shares(page, panel)
    assert fill > 0.4 and light > 0.01, (fill, light)  # the panel is painted, with text on it
    if kind == "dom":
        assert page.locator(f'[data-node-id="{nid}"] .clusca-stats-panel').inner_text().splitlines() == shown["drawn"]
    return shown


def set_sampler(page, ks: int, seed: int, steps=None):
    page.evaluate("""([id, seed, steps]) => { const ws = (%s).graph.getNodeById(id).widgets;
                      ws.find(w => w.name === 'seed').value = seed;
                      if (steps !== null) ws.find(w => w.name === 'steps').value = steps; }""" % APP, [ks, seed, steps])


def toggle_bypass(page, nid: int):
    """Select the node and press Ctrl+B, as a user does."""
    page.evaluate(f"id => {{ const app = {APP}; app.canvas.deselectAll?.(); app.canvas.selectNode(app.graph.getNodeById(id)); }}",
                  nid)
    page.locator("canvas.lgraphcanvas").first.focus()
    page.keyboard.press("Control+b")


def find_node_in_library(page):
    """Classic: the node library's search finds the ClusCa node under the pack's category, and it adds the node.
    The category folder is called "ClusCa" too: the entry that adds the node is the one a double click adds."""
    before = count_nodes(page, "ClusCa")
    page.get_by_text("Nodes", exact=True).first.click()
    page.get_by_placeholder(re.compile(r"^Search")).first.fill("ClusCa")   # "Search Nodes", "Search..."
    items = page.get_by_text("ClusCa", exact=True)
    items.first.wait_for(state="visible", timeout=20_000)
    page.get_by_text("ClusCa (Advanced)", exact=True).first.wait_for(state="visible", timeout=20_000)
    page.screenshot(path=str(page.shots / "1_node_library.png"))
    added = False
    for i in reversed(range(items.count())):   # the node's entry comes after its category's
        item = items.nth(i)
        if not item.is_visible():
            continue
        item.dblclick()   # 1.32.9 adds on a click, later frontends on a double click
        try:
            page.wait_for_function(f"n => {APP}.graph._nodes.filter(x => x.type === 'ClusCa').length > n",
                                   arg=before, timeout=5_000)
            added = True
            break
        except Exception:   # playwright's TimeoutError: that entry was the category
            continue
    assert added, "no entry of the node library's search added the ClusCa node"
    page.get_by_text("Nodes", exact=True).first.click()   # close the library


def load_from_template_browser(page, wf):
    """Classic: the template browser lists the pack's workflows under its name; a card loads one."""
    command(page, "Comfy.BrowseTemplates")
    page.get_by_role("dialog").get_by_text(PACK_NAME, exact=True).first.click(timeout=30_000)
    for name in WORKFLOW_NAMES:
        page.get_by_role("dialog").get_by_text(name, exact=True).first.wait_for(state="visible", timeout=20_000)
    time.sleep(0.5)   # thumbnails
    page.screenshot(path=str(page.shots / "2_template_browser.png"))
    page.get_by_role("dialog").get_by_text("tiny_reference_model", exact=True).first.click()
    page.get_by_role("dialog").first.wait_for(state="detached", timeout=30_000)
    want = sorted(n["type"] for n in wf["nodes"])
    page.wait_for_function(f"want => JSON.stringify({APP}.graph._nodes.map(n => n.type).sort()) === JSON.stringify(want)",
                           arg=want, timeout=30_000)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_browser_workflow_run_and_stats_panel(browser_page, rendering):
    page = browser_page
    frontend_seed = 4000 + 100 * FRONTENDS.index(page.frontend) + 50 * RENDERINGS.index(rendering)
    vue = rendering == "vue"
    kind = "dom" if vue else "canvas"
    # the page renders nodes the way this test asks (the setting exists in every tested frontend)
    assert page.evaluate(f"k => {APP}.extensionManager.setting.get(k)", VUE_SETTING) is vue
    assert page.evaluate("() => window.ClusCaStats.vueNodesMode()") is vue
    wf = load_workflow(WORKFLOW_PATH)
    cc = int(node_id(wf, "ClusCa"))
    ks = int(node_id(wf, "KSampler"))
    save = int(save_node_fed_by(wf, "ClusCaReferenceDecode"))

    # 1. the node library and the template browser (classic; they do not depend on how nodes are rendered)
    if not vue:
        find_node_in_library(page)
        load_from_template_browser(page, wf)
    else:
        page.evaluate(f"""async () => {{
            const r = await fetch('/api/workflow_templates/{PACK_NAME}/tiny_reference_model.json');
            await {APP}.loadGraphData(await r.json());
        }}""")
        page.locator(f'[data-node-id="{cc}"]').first.wait_for(state="visible", timeout=30_000)
    assert count_nodes(page, "ClusCa") == 1
    command(page, "Comfy.Canvas.FitView")
    time.sleep(0.3)
    page.screenshot(path=str(page.shots / "3_workflow_loaded.png"))
    # full size on the ClusCa node (zoomed out, Vue nodes are drawn as placeholders without widgets)
    page.evaluate(f"""id => {{ const app = {APP}; const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
                         ds.scale = 1; ds.offset[0] = 320 - n.pos[0]; ds.offset[1] = 110 - n.pos[1];
                         app.canvas.setDirty(true, true); }}""", cc)
    # seeds the other tests did not use, so nothing is served from ComfyUI's cache
    set_sampler(page, ks, frontend_seed + 1, TEST_STEPS)

    # 2. queued with the Run button: the stats appear on the node and the image arrives
    page.get_by_role("button", name="Run").first.click()
    shown = wait_for_stats_shown(page, cc, kind)
    # the image arrived (node.imgs; later frontends keep outputs in app.nodeOutputs)
    page.wait_for_function(f"""id => {{ const app = {APP}; return (app.graph.getNodeById(id).imgs?.length ?? 0) > 0
                                   || (app.nodeOutputs?.[String(id)]?.images?.length ?? 0) > 0; }}""",
                           arg=save, timeout=60_000)
    page.screenshot(path=str(page.shots / "4_after_run.png"))
    page.screenshot(path=str(page.shots / "5_clusca_node.png"), clip=node_screen_box(page, cc))

    # 3. bypassing the node (Ctrl+B) removes its panel
    toggle_bypass(page, cc)
    page.wait_for_function("id => window.ClusCaStats.shown().find(n => n.id === String(id)).stats === null",
                           arg=cc, timeout=20_000)
    assert page.evaluate(f"id => {APP}.graph.getNodeById(id).mode", cc) == MODE_BYPASS
    time.sleep(0.3)
    assert page.locator(".clusca-stats-panel").count() == 0
    fill, _ = pixel_shares(page, node_screen_box(page, cc))
    assert fill < 0.01, fill
    page.screenshot(path=str(page.shots / "6_bypassed.png"))

    # 4. classic: queued while bypassed, the cluster map refuses the model without ClusCa with its message,
    #    shown by the page (1.32.9 in a dialog, later frontends behind "View details"); no stats come back
    if not vue:
        page.get_by_role("button", name="Run").first.click()
        message = page.get_by_text("has no ClusCa").first
        details = page.get_by_role("button", name="View details").first
        message.or_(details).first.wait_for(state="visible", timeout=120_000)
        if not message.is_visible():
            details.click()
        message.wait_for(state="visible", timeout=20_000)
        page.screenshot(path=str(page.shots / "7_cluster_map_error.png"))
        assert page.evaluate("id => window.ClusCaStats.shown().find(n => n.id === String(id)).stats", cc) is None
        page.keyboard.press("Escape")

    # 5. back on (Ctrl+B again) and queued: the panel shows the new run's stats
    toggle_bypass(page, cc)
    assert page.evaluate(f"id => {APP}.graph.getNodeById(id).mode", cc) == 0
    set_sampler(page, ks, frontend_seed + 2)
    page.get_by_role("button", name="Run").first.click()
    again = wait_for_stats_shown(page, cc, kind, not_prompt=shown["stats"]["prompt_id"])
    page.screenshot(path=str(page.shots / "8_run_again.png"))

    # 6. classic: switched to Nodes 2.0 while the panel shows, the page renders the node with Vue and the
    #    panel comes back as the HTML panel, with the same run's stats
    if not vue:
        page.evaluate(f"k => {APP}.extensionManager.setting.set(k, true)", VUE_SETTING)
        page.rendering = "vue"
        page.locator(f'[data-node-id="{cc}"]').first.wait_for(state="visible", timeout=30_000)
        switched = wait_for_stats_shown(page, cc, "dom")
        assert switched["stats"]["prompt_id"] == again["stats"]["prompt_id"]
        page.screenshot(path=str(page.shots / "9_switched_to_vue_nodes.png"))

    # no errors or warnings from our extension (the frontends' own, e.g. blocked registry look-ups, are not ours)
    ours = ("clusca_stats", "clusca.stats", "ClusCa.RunStats", f"/extensions/{PACK_NAME}/")
    errors = [line for line in page.console_lines
              if line.startswith(("error", "warning", "pageerror")) and any(m in line for m in ours)]
    assert not errors, errors
