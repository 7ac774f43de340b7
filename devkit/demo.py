"""The main job: a real headless ComfyUI server runs the tiny example workflow without and with ClusCa.

``make demo`` starts ComfyUI 0.3.75 (``.comfyui/ComfyUI/main.py`` with its pinned frontend package) on CPU,
bound to 127.0.0.1 on a free port, with this pack installed as a custom node; queues
``workflows/tiny_reference_model.json`` through the HTTP API, once with its ClusCa node bypassed (and the cluster
map muted) and once as shipped, alternating ``--repeats`` times; follows each prompt over the websocket; and
prints the sampler's speed ratio, the fidelity of the ClusCa image against the uncached one (PSNR, SSIM) and
where the images were written. The server is stopped when the demo ends, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .comfy_env import REPO, comfyui_version
from .comfy_server import ComfyClient, ComfyServer, RunRecord, ServerError
from .workflow_api import CLUSCA_NODE_TYPES, MODE_BYPASS, MODE_NEVER, find_nodes, load_workflow, workflow_to_prompt

DEFAULT_WORKFLOW = REPO / "workflows" / "tiny_reference_model.json"


def downstream(workflow: dict, start_ids) -> set:
    """Ids of the nodes fed (directly or not) by ``start_ids``, those included."""
    edges = {}
    for link in workflow.get("links") or []:
        src, dst = (link["origin_id"], link["target_id"]) if isinstance(link, dict) else (link[1], link[3])
        edges.setdefault(src, set()).add(dst)
    seen, todo = set(), list(start_ids)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    return seen


def variants(workflow: dict, object_info: dict) -> dict:
    """{"uncached": prompt, "clusca": prompt}: without ClusCa = its ClusCa nodes bypassed, cluster map branch
    muted."""
    clusca = [n["id"] for t in CLUSCA_NODE_TYPES for n in find_nodes(workflow, t)]
    if not clusca:
        raise SystemExit(f"the workflow has no ClusCa node ({', '.join(CLUSCA_NODE_TYPES)})")
    maps = downstream(workflow, [n["id"] for n in find_nodes(workflow, "ClusCaClusterMap")])
    modes = {nid: MODE_BYPASS for nid in clusca}
    modes.update({nid: MODE_NEVER for nid in maps})
    return {"uncached": workflow_to_prompt(workflow, object_info, modes=modes),
            "clusca": workflow_to_prompt(workflow, object_info)}


def _image_tensor(path: Path):
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def _main_images(workflow: dict, record: RunRecord, client: ComfyClient, exclude: set) -> list:
    paths = []
    for node in find_nodes(workflow, "SaveImage"):
        if node["id"] not in exclude:
            paths += [client.image_path(im) for im in record.images(node["id"])]
    return paths


async def run_demo(server: ComfyServer, workflow: dict, repeats: int, timeout: float) -> dict:
    object_info = server.object_info()
    prompts = variants(workflow, object_info)
    samplers = [str(n["id"]) for n in find_nodes(workflow, "KSampler")]
    maps = downstream(workflow, [n["id"] for n in find_nodes(workflow, "ClusCaClusterMap")])
    records = {"uncached": [], "clusca": []}
    async with ComfyClient(server) as client:
        for i in range(repeats):
            for name in ("uncached", "clusca"):
                rec = await client.run(prompts[name], timeout)
                ran = [s for s in samplers if s in rec.node_seconds]
                if not ran:
                    raise ServerError(f"the sampler did not run in the {name} prompt (served from the cache?)")
                records[name].append(rec)
                print(f"  run {i + 1}/{repeats} {name:8s}: sampler {sum(rec.node_seconds[s] for s in ran):6.2f} s, "
                      f"prompt {rec.seconds:6.2f} s", flush=True)
        uncached_img = _main_images(workflow, records["uncached"][-1], client, maps)
        clusca_img = _main_images(workflow, records["clusca"][-1], client, maps)
        map_img = []
        for node in find_nodes(workflow, "SaveImage"):
            if node["id"] in maps:
                map_img += [client.image_path(im) for im in records["clusca"][-1].images(node["id"])]
    return {"records": records, "samplers": samplers, "uncached_images": uncached_img, "clusca_images": clusca_img,
            "map_images": map_img}


def report(result: dict, workflow_path: Path) -> None:
    from .metrics import psnr, ssim
    recs = result["records"]

    def sampler_seconds(rec):
        return sum(rec.node_seconds.get(s, 0.0) for s in result["samplers"])

    # best of the repeats: the least disturbed by whatever else the machine runs
    t_plain = min(sampler_seconds(r) for r in recs["uncached"])
    t_clusca = min(sampler_seconds(r) for r in recs["clusca"])
    stats = [m for r in recs["clusca"] for m in r.stats]
    if not stats:
        raise ServerError("the ClusCa run sent no clusca.stats message")
    s = stats[-1]["summary"]
    if not result["uncached_images"] or not result["clusca_images"]:
        raise ServerError("the runs wrote no images")
    a, b = _image_tensor(result["clusca_images"][0]), _image_tensor(result["uncached_images"][0])
    toks = " + ".join(f"{v} {k}" for k, v in (s.get("tokens_per_cached_step") or {}).items()) or "0"
    geo = ", ".join(f"{k} {v}" for k, v in (s.get("geometry") or {}).items())
    rel = lambda p: str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)  # noqa: E731
    n = len(recs["clusca"])
    print(f"\nComfyUI {comfyui_version()} on CPU, {workflow_path.name}: {s.get('family')} ({geo}), {s.get('steps')} steps")
    print(f"  without ClusCa : sampler {t_plain:.2f} s (best of {n})")
    print(f"  with ClusCa    : sampler {t_clusca:.2f} s (best of {n}); {s.get('full_steps')} full + "
          f"{s.get('cached_steps')} cached steps, {toks} tokens per cached step and block")
    print(f"  speed-up       : {t_plain / t_clusca:.2f}x sampler wall clock (schedule bound "
          f"{s.get('schedule_bound', 0):.2f}x, estimated FLOPs {s.get('estimated_flops_speedup', 0):.2f}x)")
    print(f"  fidelity       : PSNR {psnr(a, b):.2f} dB, SSIM {ssim(a, b):.4f} (ClusCa image vs uncached image)")
    print(f"  images         : {rel(result['uncached_images'][0])} (without ClusCa)")
    print(f"                   {rel(result['clusca_images'][0])} (with ClusCa)")
    for p in result["map_images"][:1]:
        print(f"                   {rel(p)} (ClusCa cluster map)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workflow", default=str(DEFAULT_WORKFLOW), help="UI-format workflow with a ClusCa node")
    ap.add_argument("--repeats", type=int, default=2, help="uncached/ClusCa pairs (best sampler time of each)")
    ap.add_argument("--out", default=str(REPO / "out" / "demo"), help="the server's base directory")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per prompt")
    ap.add_argument("--extra-custom-nodes", nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--pack-dir", default=None, help=argparse.SUPPRESS)  # serve another checkout (debugging)
    args = ap.parse_args(argv)
    workflow_path = Path(args.workflow)
    if not workflow_path.exists():
        print(f"no workflow at {workflow_path}", file=sys.stderr)
        return 2
    workflow = load_workflow(workflow_path)

    def on_term(signum, frame):  # `kill` / CI cancelling: unwind like Ctrl-C so the server is stopped
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    import asyncio
    import shutil
    shutil.rmtree(Path(args.out) / "output", ignore_errors=True)   # this run's images only, numbered from 1
    server = ComfyServer(args.out, extra_custom_nodes=args.extra_custom_nodes, extra_args=["--cache-none"],
                         pack_dir=args.pack_dir)
    t0 = time.monotonic()
    try:
        print(f"starting ComfyUI (CPU, {server.url}, base directory {server.base}) ...", flush=True)
        with server:
            print(f"  ready after {time.monotonic() - t0:.1f} s; queuing {workflow_path.name} "
                  f"{args.repeats}x without and with ClusCa", flush=True)
            result = asyncio.run(run_demo(server, workflow, args.repeats, args.timeout))
        print(f"server stopped (log: {server.log_path})")
        report(result, workflow_path)
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    except ServerError as exc:
        print(f"demo failed: {exc}\n(server log: {server.log_path})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
