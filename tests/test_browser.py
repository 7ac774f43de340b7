"""What a ComfyUI user sees, on a real server and in a real browser.

One real headless ComfyUI 0.3.75 server (``devkit.comfy_server``: ``main.py --cpu`` on 127.0.0.1, the pinned
frontend package, this pack as a custom node) is started for the module and always stopped. The tests:

- HTTP/websocket: the tiny reference workflow runs; the run's stats arrive as a ``clusca.stats`` message for
  the Apply ClusCa node; the cluster map is written with the decoded image's size; bypassed, no stats are sent;
  the cluster map fed a model without ClusCa fails with its clear message; help pages, the extension script
  and the workflows folder are served.
- Browser: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright, no browser download) opens the
  page, finds "Apply ClusCa" in the node library search, loads the tiny workflow from the pack's workflow
  templates route, queues it with the Run button, and checks that the stats are drawn on the node and an image
  is produced; bypassing the node (Ctrl+B) clears them. Screenshots go to ``out/browser/``.

The browser test needs Chromium: set ``CLUSCA_SKIP_BROWSER=1`` to skip it locally. In CI (``CI`` set) it
never skips: a missing browser fails it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from pathlib import Path

import pytest

from devkit.comfy_server import PACK_NAME, ComfyClient, ComfyServer, ServerError
from devkit.workflow_api import MODE_BYPASS, MODE_NEVER, find_nodes, load_workflow, workflow_to_prompt

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out"
SHOTS = OUT / "browser"
WORKFLOW_PATH = REPO / "workflows" / "tiny_reference_model.json"
CHROMIUM = os.environ.get("CLUSCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: the page's settings for a fresh user: no first-run template browser, no missing-model dialogs
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
            "Comfy.Workflow.ShowMissingNodesWarning": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-server")   # private: several test sessions may run at once
    srv = ComfyServer(base, settings=SETTINGS, pack_dir=os.environ.get("CLUSCA_PACK_DIR") or None)
    try:
        with srv:
            yield srv
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "server.log").write_text(srv.log_text(), encoding="utf-8")   # kept as a test artefact


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


TEST_STEPS = 12   # fewer than the shipped 30, to keep the suite fast; still 3 full + cached steps


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
    cc = node_id(wf, "ApplyClusCa")
    assert len(rec.stats) == 1, rec.stats
    msg = rec.stats[0]
    assert msg["node"] == cc and msg["prompt_id"] == rec.prompt_id
    assert msg["sampler_node"] == node_id(wf, "KSampler")
    s = msg["summary"]
    assert s["steps"] == s["full_steps"] + s["cached_steps"] and s["cached_steps"] > 0
    assert s["estimated_flops_speedup"] > 1 and s["sampling_seconds"] > 0 and s["peak_cache_bytes"] > 0
    assert s["node_id"] == cc
    image = rec.images(save_node_fed_by(wf, "ClusCaReferenceDecode"))
    cmap = rec.images(save_node_fed_by(wf, "ClusCaClusterMap"))
    assert len(image) == 1 and len(cmap) == 1
    with Image.open(client.image_path(image[0])) as im, Image.open(client.image_path(cmap[0])) as mp:
        assert mp.size == im.size
        colours = mp.convert("RGB").getcolors(maxcolors=4096)
        assert colours is not None and 2 <= len(colours) <= 4096


def test_no_stats_when_apply_clusca_is_bypassed(server, object_info, workflow):
    wf = with_seed(workflow, 102)
    cmap = find_nodes(wf, "ClusCaClusterMap")[0]["id"]
    muted = {cmap: MODE_NEVER, int(save_node_fed_by(wf, "ClusCaClusterMap")): MODE_NEVER}
    prompt = workflow_to_prompt(wf, object_info, modes={int(node_id(wf, "ApplyClusCa")): MODE_BYPASS, **muted})
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


def test_pack_assets_are_served(server):
    js = server.get_bytes(f"/extensions/{PACK_NAME}/js/clusca_stats.js").decode()
    assert "clusca.stats" in js
    for name in server.object_info():
        if name.startswith("ClusCa") or name == "ApplyClusCa":
            page = server.get_bytes(f"/extensions/{PACK_NAME}/docs/{name}.md").decode()
            assert page.startswith("# "), name
    assert "tiny_reference_model" in server.get_json("/workflow_templates")[PACK_NAME]
    served = json.loads(server.get_bytes(f"/api/workflow_templates/{PACK_NAME}/tiny_reference_model.json"))
    assert served["nodes"] == load_workflow(WORKFLOW_PATH)["nodes"]


# -- in the browser -------------------------------------------------------------------------------------

APP = "(window.app ?? window.comfyAPI.app.app)"


@pytest.fixture(scope="module")
def browser_page(server, tmp_path_factory):
    if os.environ.get("CLUSCA_SKIP_BROWSER") == "1" and not os.environ.get("CI"):
        pytest.skip("CLUSCA_SKIP_BROWSER=1")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    f"(apt-get install -y chromium; .ci/run does this)")
    from playwright.sync_api import sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("browser-profile")   # a fresh user-data-dir
    console = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                                    headless=True, viewport={"width": 1600, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(server.url + "/")
            page.wait_for_function("() => window.ClusCaStats && (window.app ?? window.comfyAPI?.app?.app)?.graph",
                                   timeout=120_000)
            page.console_lines = console
            yield page
        finally:
            (SHOTS / "console.log").write_text("\n".join(console), encoding="utf-8")
            ctx.close()


def count_nodes(page, node_type) -> int:
    return page.evaluate(f"t => {APP}.graph._nodes.filter(n => n.type === t).length", node_type)


def node_screen_box(page, nid: int) -> dict:
    """The node's rectangle on the page (title bar included), from the canvas transform."""
    return page.evaluate(f"""id => {{
        const app = {APP}; const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
        const r = app.canvas.canvas.getBoundingClientRect(); const th = 30;
        return {{x: r.left + (n.pos[0] + ds.offset[0]) * ds.scale - 4,
                 y: r.top + (n.pos[1] - th + ds.offset[1]) * ds.scale - 4,
                 width: n.size[0] * ds.scale + 8, height: (n.size[1] + th) * ds.scale + 8}};
    }}""", nid)


def test_browser_node_search_workflow_run_and_stats(browser_page):
    page = browser_page
    # 1. the node library's search finds the node, and a click adds it to the graph
    before = count_nodes(page, "ApplyClusCa")
    page.get_by_text("Nodes", exact=True).first.click()
    search = page.get_by_placeholder("Search Nodes")
    search.first.fill("Apply ClusCa")
    item = page.get_by_text("Apply ClusCa", exact=True).first
    item.wait_for(state="visible", timeout=20_000)
    page.screenshot(path=str(SHOTS / "1_node_search.png"))
    item.click()
    page.wait_for_function(f"n => {APP}.graph._nodes.filter(x => x.type === 'ApplyClusCa').length > n", arg=before,
                           timeout=20_000)
    page.get_by_text("Nodes", exact=True).first.click()   # close the library

    # 2. load the tiny workflow from the pack's workflow templates route (workflows/ folder)
    page.evaluate(f"""async () => {{
        const r = await fetch('/api/workflow_templates/{PACK_NAME}/tiny_reference_model.json');
        await {APP}.loadGraphData(await r.json());
    }}""")
    page.locator("canvas.lgraphcanvas").first.click(position={"x": 700, "y": 900})   # empty canvas
    page.keyboard.press(".")                                                          # fit the view to the graph
    wf = load_workflow(WORKFLOW_PATH)
    cc = int(node_id(wf, "ApplyClusCa"))
    save = int(save_node_fed_by(wf, "ClusCaReferenceDecode"))
    ks = int(node_id(wf, "KSampler"))
    assert count_nodes(page, "ApplyClusCa") == 1
    # a seed the API tests did not use, so nothing is served from ComfyUI's cache
    page.evaluate(f"""([id, steps]) => {{ const ws = {APP}.graph.getNodeById(id).widgets;
                                ws.find(w => w.name === 'seed').value = 4242;
                                ws.find(w => w.name === 'steps').value = steps; }}""", [ks, TEST_STEPS])
    page.screenshot(path=str(SHOTS / "2_workflow_loaded.png"))

    # 3. queue it with the Run button; the stats appear on the node and the image arrives
    page.get_by_role("button", name="Run").first.click()
    page.wait_for_function("""id => (window.ClusCaStats.shown().find(n => n.id === String(id))?.drawCount ?? 0) > 0""",
                           arg=cc, timeout=180_000)
    page.wait_for_function(f"id => ({APP}.graph.getNodeById(id).imgs ?? []).length > 0", arg=save, timeout=60_000)
    time.sleep(0.5)
    shown = next(n for n in page.evaluate("() => window.ClusCaStats.shown()") if n["id"] == str(cc))
    text = "\n".join(shown["drawn"])
    summary = shown["stats"]["summary"]
    assert f"{summary['full_steps']} full + {summary['cached_steps']} cached of {summary['steps']} steps" in text
    assert "tokens per cached step" in text and "est. speed-up" in text and "sampling" in text and "cache" in text
    page.screenshot(path=str(SHOTS / "3_after_run.png"))
    page.screenshot(path=str(SHOTS / "4_apply_clusca_node.png"), clip=node_screen_box(page, cc))

    # 4. bypassing the node (Ctrl+B) clears its stats
    page.evaluate(f"id => {{ const app = {APP}; app.canvas.deselectAll?.(); app.canvas.selectNode(app.graph.getNodeById(id)); }}", cc)
    page.locator("canvas.lgraphcanvas").first.focus()
    page.keyboard.press("Control+b")
    page.wait_for_function("id => window.ClusCaStats.shown().find(n => n.id === String(id)).stats === null",
                           arg=cc, timeout=20_000)
    assert page.evaluate(f"id => {APP}.graph.getNodeById(id).mode", cc) == MODE_BYPASS
    page.screenshot(path=str(SHOTS / "5_bypassed.png"))

    # 5. queued while bypassed, the cluster map refuses the model without ClusCa with its message, shown by
    #    the page; no stats come back
    page.get_by_role("button", name="Run").first.click()
    page.get_by_text("has no ClusCa").first.wait_for(state="visible", timeout=120_000)
    page.screenshot(path=str(SHOTS / "6_cluster_map_error.png"))
    assert page.evaluate("id => window.ClusCaStats.shown().find(n => n.id === String(id)).stats", cc) is None
    page.keyboard.press("Escape")

    # 6. back on (Ctrl+B again) and queued: the stats come back, from the new run
    first_prompt = shown["stats"]["prompt_id"]
    page.evaluate(f"id => {{ const app = {APP}; app.canvas.selectNode(app.graph.getNodeById(id)); }}", cc)
    page.keyboard.press("Control+b")
    assert page.evaluate(f"id => {APP}.graph.getNodeById(id).mode", cc) == 0
    page.evaluate(f"id => {{ {APP}.graph.getNodeById(id).widgets.find(w => w.name === 'seed').value = 5151; }}", ks)
    page.get_by_role("button", name="Run").first.click()
    page.wait_for_function("""([id, old]) => { const n = window.ClusCaStats.shown().find(n => n.id === String(id));
                                               return n.stats && n.stats.prompt_id !== old && n.drawCount > 0; }""",
                           arg=[cc, first_prompt], timeout=180_000)
    page.screenshot(path=str(SHOTS / "7_run_again.png"))
    errors = [line for line in page.console_lines if "clusca_stats.js" in line]   # our extension's errors
    assert not errors, errors
