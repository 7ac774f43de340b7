"""The speed-up controller on the trained reference models, against the schedules a user could pick instead.

Parts (``--part``):

- ``profile``: the forecast error the representatives measure one step after a full step (fixed interval 2,
  both parities), per step of a 50-step euler run, averaged over conditions, and how it grows with the distance
  from the last full step (in the gaps of the error-threshold schedule at 0.08): the per-family error profile
  the controller starts from (``nodes/presets.py`` ``MEASURED_ERROR_PROFILES``).
- ``front``: per reference model and condition (prompt and seed; 8 by default), TaylorSeer's fixed interval
  (N = 3..8), the error-threshold schedule, ComfyUI's EasyCache, the controller (the basic ClusCa node, i.e.
  with the family's best settings) at 3, 4, 5 and 6x and, as the
  higher anchor, the best fixed ClusCa schedule a grid over interval, warm-up and caching window finds at each
  controller budget (screened on 2 conditions, the best 2 per budget then run on half the conditions, and
  compared with the controller on those). EasyCache runs on half the conditions too. PSNR of the decoded
  output against the uncached one. Each controller cell is compared with the fronts interpolated at its
  full steps: TaylorSeer's (target: +1 dB) and the threshold schedule's (target: no more than 0.3 dB below).

Runs are kept in ``out/controller/runs.json`` (keyed by model, method and condition), so a rerun computes
only what is missing (``--fresh`` drops the controller's runs, e.g. after changing it). Writes the
``controller`` part of ``docs/benchmarks.json``, its section of ``docs/benchmarks.md`` and
``docs/images/controller_front.png``.

    .venv/bin/python -m benchmarks.controller --part profile --conditions 4
    .venv/bin/python -m benchmarks.controller --part front --conditions 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from devkit.comfy_env import REPO, load_pack, pack_module

OUT = REPO / "out" / "controller"
DOCS = REPO / "docs"
STEPS, CFG = 50, 4.0
SPEEDUPS = (3.0, 4.0, 5.0, 6.0)
TS_INTERVALS = (3, 4, 5, 6, 7, 8)
THRESHOLDS = (0.02, 0.03, 0.05, 0.08, 0.12, 0.16)
EASYCACHE = (0.02, 0.05, 0.1, 0.2)
GRID_INTERVALS = (3, 4, 5, 6, 7, 8)
GRID_WARMUPS = (1, 2, 3, 4, 6, 8)
GRID_LAST_FULL = (0, 4, 8)          # the last L steps outside the caching window (run in full)


class Store:
    """Every run's result, on disk: {model: {method: {condition: row}}}."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, model, method, cond):
        return self.data.get(model, {}).get(method, {}).get(str(cond))

    def put(self, model, method, cond, row):
        self.data.setdefault(model, {}).setdefault(method, {})[str(cond)] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data))

    def drop(self, prefix: str):
        for methods in self.data.values():
            for name in [m for m in methods if m.startswith(prefix)]:
                del methods[name]


class Bench:
    """One reference model: its conditions, the uncached outputs, and runs of node inputs on it."""

    def __init__(self, name: str, store: Store, conditions: int):
        ref = pack_module("nodes.reference")
        self.name = name.replace(".safetensors", "")
        self.model, self.spec = ref.load_reference_model(name)
        examples = self.spec.prompts.get("examples") or list(self.spec.classes)
        self.conditions = [(examples[i % len(examples)], 1000 + i) for i in range(conditions)]
        self.store = store
        self._uncached = {}

    def sample(self, model, cond):
        from devkit.tiny_models import sample
        prompt, seed = self.conditions[cond]
        pos, neg = self.spec.conditioning(prompt)
        out = sample(model, pos, neg, steps=STEPS, cfg=CFG, latent=self.spec.empty_latent(1)["samples"], seed=seed)
        return self.spec.decode(out)

    def uncached(self, cond):
        if cond not in self._uncached:
            t = time.perf_counter()
            self._uncached[cond] = self.sample(self.model, cond)
            self.store.put(self.name, "uncached", cond, {"seconds": time.perf_counter() - t, "full_steps": STEPS})
        return self._uncached[cond]

    def run(self, method: str, inputs: dict, cond: int) -> dict:
        """PSNR, full steps and probe errors of the ClusCa (Advanced) node with ``inputs`` (or EasyCache with
        ``{"easycache": threshold}``) on one condition."""
        row = self.store.get(self.name, method, cond)
        if row is not None:
            return row
        import nodes
        from devkit.metrics import psnr
        reference = self.uncached(cond)
        t = time.perf_counter()
        if "easycache" in inputs:
            from comfy.patcher_extension import WrappersMP
            from comfy_extras.nodes_easycache import EasyCacheNode
            calls = []
            m = EasyCacheNode.execute(model=self.model, reuse_threshold=inputs["easycache"], start_percent=0.15,
                                      end_percent=0.95, verbose=False).result[0].clone()
            m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "clusca_bench_count",
                                   lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
            image = self.sample(m, cond)
            row = {"full_steps": len(calls)}
        else:
            inputs = dict(inputs)
            node = inputs.pop("node", "ClusCaAdvanced")
            m = nodes.NODE_CLASS_MAPPINGS[node].execute(model=self.model, **inputs).result[0]
            image = self.sample(m, cond)
            holder = m.model_options["transformer_options"]["clusca"]
            s = holder.last_summary
            row = {"full_steps": s["full_steps"], "full_step_indices": s["full_step_indices"],
                   "probe_errors": [(st, round(e, 5)) for st, _, e in s["probe_errors"]]}
        row["seconds"] = time.perf_counter() - t
        row["psnr"] = psnr(image, reference)
        self.store.put(self.name, method, cond, row)
        return row

    def mean(self, method, inputs, conds) -> dict:
        rows = [self.run(method, inputs, c) for c in conds]
        out = {"method": method, "inputs": inputs, "full_steps": statistics.mean(r["full_steps"] for r in rows),
               "psnr": statistics.mean(r["psnr"] for r in rows), "conditions": len(rows)}
        base = [self.store.get(self.name, "uncached", c) for c in conds]
        if all("seconds" in r for r in rows) and all(base):
            out["wall_clock_ratio"] = sum(b["seconds"] for b in base) / sum(r["seconds"] for r in rows)
        return out


# -- the error profile ------------------------------------------------------------------------------------

def measure_profile(bench: Bench, conds, bins: int = 10) -> dict:
    """Mean probe error per step at distance 1 from the last full step (fixed interval 2, both parities); the
    profile over ``bins`` equal parts of the run; the growth of the error with the distance from the last full
    step, measured in the gaps of the error-threshold schedule."""
    base = dict(schedule="fixed interval", mode="clusca", verbose=True)
    d1 = defaultdict(list)
    for c in conds:
        for warmup in (1, 2):
            for step, e in bench.run(f"profile d1 w{warmup}", dict(base, fresh_interval=2, warmup_steps=warmup),
                                     c)["probe_errors"]:
                d1[step].append(e)
    e1 = {s: statistics.mean(v) for s, v in d1.items()}
    # growth: within the gaps of the error-threshold schedule, (error at distance d / error at 1 - 1) / (d - 1)
    ratios = []
    for c in conds:
        row = bench.run("threshold t=0.08", dict(schedule="error threshold", adaptive_threshold=0.08), c)
        full, errors = set(row["full_step_indices"]), dict(row["probe_errors"])
        last = first = None
        for step in range(STEPS):
            if step in full:
                last, first = step, None
            elif last is not None and step in errors:
                if step - last == 1:
                    first = errors[step]
                elif first:
                    ratios.append((errors[step] / first - 1) / (step - last - 1))
    profile = []
    for b in range(bins):
        lo, hi = b * STEPS / bins, (b + 1) * STEPS / bins
        values = [e for s, e in e1.items() if lo <= s < hi]
        profile.append(round(statistics.mean(values), 4) if values else None)
    filled = [p for p in profile if p is not None]
    profile = [p if p is not None else filled[0] for p in profile]
    return {"model": bench.name, "per_step_d1": {s: round(e, 5) for s, e in sorted(e1.items())},
            "profile": profile, "growth": round(max(statistics.median(ratios), 0.0), 3) if ratios else None}


# -- the fronts -------------------------------------------------------------------------------------------

def envelope_at(points, x):
    """The upper monotone envelope of (full steps, PSNR) points (more full steps never worse), interpolated
    linearly at ``x``; None outside the points' range."""
    pts = sorted(points)
    if not pts or x < pts[0][0] - 1e-9 or x > pts[-1][0] + 1e-9:
        return None
    env, best = [], -1e9
    for fx, py in pts:
        best = max(best, py)
        env.append((fx, best))
    at = [y for fx, y in env if abs(fx - x) < 1e-9]
    if at:                      # points at x itself (several schedules may spend the same full steps): the best
        return max(at)
    for (x0, y0), (x1, y1) in zip(env, env[1:]):
        if x0 < x < x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def grid_configs(bench: Bench, budget: int):
    """Fixed ClusCa schedules of the grid that spend ``budget`` full steps, as node inputs."""
    build_full_step_mask = pack_module("clusca_core.schedule").build_full_step_mask
    StepLocator = pack_module("clusca_core.schedule").StepLocator
    ms = bench.model.model.model_sampling
    sigmas = _simple_sigmas(ms)
    loc = StepLocator(sigmas)
    out = []
    for last in GRID_LAST_FULL:
        end = 1.0 if last == 0 else _end_percent_for(ms, sigmas, last)
        window = loc.window_mask(float("inf"), float(ms.percent_to_sigma(end)))
        for n in GRID_INTERVALS:
            for w in GRID_WARMUPS:
                mask = build_full_step_mask(STEPS, w, n, window)
                if sum(mask) == budget:
                    out.append(dict(schedule="fixed interval", mode="clusca", fresh_interval=n, warmup_steps=w,
                                    end_percent=round(end, 4)))
    return out


def _simple_sigmas(ms):
    import comfy.samplers
    return comfy.samplers.calculate_sigmas(ms, "simple", STEPS).tolist()


def _end_percent_for(ms, sigmas, last: int) -> float:
    """An end_percent whose sigma lies between the sigmas of steps ``STEPS - last - 1`` and ``STEPS - last``,
    so that the last ``last`` steps fall outside the caching window."""
    target = (sigmas[STEPS - last - 1] + sigmas[STEPS - last]) / 2
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if float(ms.percent_to_sigma(mid)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def measure_front(bench: Bench, conds) -> dict:
    rows = {"taylorseer": [], "threshold": [], "easycache": [], "controller": [], "grid": []}
    # TaylorSeer at the Taylor order the basic node uses on the family, so that only the schedule differs
    order = pack_module("nodes.presets").best_for(bench.spec.family).get(
        "taylor_order", pack_module("nodes.settings").BEST["taylor_order"])
    for n in TS_INTERVALS:
        name = f"taylorseer N={n}" if order == 1 else f"taylorseer order {order} N={n}"
        rows["taylorseer"].append(bench.mean(name, dict(schedule="fixed interval", mode="taylorseer", fresh_interval=n,
                                                        taylor_order=order), conds))
    for t in THRESHOLDS:
        rows["threshold"].append(bench.mean(f"threshold t={t:g}", dict(schedule="error threshold",
                                                                        adaptive_threshold=t), conds))
    for t in EASYCACHE:         # a baseline for the plot: half the conditions
        rows["easycache"].append(bench.mean(f"easycache t={t:g}", {"easycache": t}, conds[:max(2, len(conds) // 2)]))
    for x in SPEEDUPS:
        rows["controller"].append(bench.mean(f"controller {x:g}x", dict(node="ClusCa", speedup=x), conds))
    for x in SPEEDUPS:
        budget = max(1, round(STEPS / x))
        configs = grid_configs(bench, budget)
        screened = sorted(configs, key=lambda inp: -bench.mean(_grid_name(inp), inp, conds[:2])["psnr"])[:2]
        grid_conds = conds[:max(2, len(conds) // 2)]
        best = max((bench.mean(_grid_name(inp), inp, grid_conds) for inp in screened), key=lambda r: r["psnr"],
                   default=None)
        if best:
            rows["grid"].append(dict(best, speedup=x, budget=budget, candidates=len(configs)))
    cells = []
    ts_pts = [(r["full_steps"], r["psnr"]) for r in rows["taylorseer"]]
    th_pts = [(r["full_steps"], r["psnr"]) for r in rows["threshold"]]
    for r, x in zip(rows["controller"], SPEEDUPS):
        f = r["full_steps"]
        ts, th = envelope_at(ts_pts, f), envelope_at(th_pts, f)
        grid = next((g for g in rows["grid"] if g["speedup"] == x), None)
        if grid is not None:        # against the controller on the grid's conditions
            grid = dict(grid, controller_psnr=bench.mean(f"controller {x:g}x", dict(node="ClusCa", speedup=x),
                                                         conds[:grid["conditions"]])["psnr"])
        cells.append({"speedup": x, "full_steps": f, "budget": STEPS / x, "psnr": r["psnr"],
                      "wall_clock_ratio": r.get("wall_clock_ratio"),
                      "taylorseer_front": ts, "threshold_front": th, "grid_best": grid and grid["psnr"],
                      "vs_taylorseer": None if ts is None else r["psnr"] - ts,
                      "vs_threshold": None if th is None else r["psnr"] - th,
                      "vs_grid": None if grid is None else grid["controller_psnr"] - grid["psnr"],
                      "steps_within_5pct": abs(f - STEPS / x) <= 0.05 * STEPS / x})
    return {"model": bench.name, "rows": rows, "cells": cells}


def _grid_name(inp) -> str:
    return f"grid N={inp['fresh_interval']} w={inp['warmup_steps']} end={inp['end_percent']:g}"


# -- report -----------------------------------------------------------------------------------------------

def _f(v, fmt="{:+.1f}"):
    return "n/a" if v is None else fmt.format(v)


def markdown(data: dict) -> list:
    """The controller's section of docs/benchmarks.md (lines)."""
    lines = ["## The speed-up controller on the reference models", "",
             f"Command: `{data['command']}`. Machine: {data['machine']}.", "",
             f"{STEPS} euler steps (simple scheduler), CFG {CFG}, {data['conditions']} prompt/seed conditions per "
             "model; PSNR of the decoded output against the uncached one (mean over conditions). Fronts: the upper "
             "monotone envelope of TaylorSeer's fixed interval (N = 3..8, at the Taylor order the basic node uses "
             "on the family) and of the error-threshold schedule, "
             "interpolated at the controller's full steps (n/a: outside the front's range). Grid: the best fixed "
             "ClusCa schedule over interval, warm-up and caching window at the controller's budget (screened on 2 "
             "conditions, the best 2 on half the conditions; vs grid = the controller on those conditions). "
             "EasyCache: half the conditions. Targets: "
             "vs TaylorSeer >= +1 dB, vs threshold >= -0.3 dB, full steps within 5 % of steps / speed-up.", ""]
    for res in data["front"]:
        lines += [f"### {res['model']}", ""]
        if res.get("command", data["command"]) != data["command"]:
            lines += [f"Command: `{res['command']}`.", ""]
        lines += [
                  "| speed-up | full steps (target) | PSNR dB | TaylorSeer front | vs TS | threshold front | vs threshold "
                  "| grid best | vs grid | met |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in res["cells"]:
            met = (c["vs_taylorseer"] is not None and c["vs_taylorseer"] >= 1.0
                   and (c["vs_threshold"] is None or c["vs_threshold"] >= -0.3) and c["steps_within_5pct"])
            lines.append(f"| {c['speedup']:g}x | {c['full_steps']:.1f} ({c['budget']:.1f}) | {c['psnr']:.1f} | "
                         f"{_f(c['taylorseer_front'], '{:.1f}')} | {_f(c['vs_taylorseer'])} | "
                         f"{_f(c['threshold_front'], '{:.1f}')} | {_f(c['vs_threshold'])} | "
                         f"{_f(c['grid_best'], '{:.1f}')} | {_f(c['vs_grid'])} | {'yes' if met else 'no'} |")
        lines += ["", "| schedule | full steps | PSNR dB |", "|---|---|---|"]
        for kind in ("taylorseer", "threshold", "easycache", "grid"):
            for r in res["rows"][kind]:
                lines.append(f"| {r['method']} | {r['full_steps']:.1f} | {r['psnr']:.1f} |")
        lines.append("")
    lines += ["![controller front](images/controller_front.png)", "", "### Speed-up table", "",
              "Per reference model and speed-up asked: full steps, PSNR, wall-clock ratio to uncached sampling on "
              "these tiny models (same conditions, same process).", "", speedup_table(data), ""]
    return lines


def speedup_table(data: dict) -> str:
    """The README's table: per reference model and speed-up asked, full steps, PSNR and wall-clock ratio."""
    lines = ["| reference model | " + " | ".join(f"{x:g}x" for x in SPEEDUPS) + " |",
             "|---|" + "---|" * len(SPEEDUPS)]
    for res in data["front"]:
        cells = [f"{c['full_steps']:.0f} full, {c['psnr']:.1f} dB, {_f(c.get('wall_clock_ratio'), '{:.2f}x')}"
                 for c in res["cells"]]
        lines.append(f"| {res['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_front(stored: dict, new: list, command: str) -> list:
    """``--models``: the new models' results replace theirs in the stored section (same order, new models
    last); every result keeps the command that measured it (the section's for the stored ones without one)."""
    by_model = {r["model"]: dict(r, command=r.get("command", stored["command"])) for r in stored["front"]}
    for r in new:
        by_model[r["model"]] = dict(r, command=command)
    return list(by_model.values())


def plot(front: list, path: Path) -> None:
    from .suite import label_axes, save_figure
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(front), figsize=(5 * len(front), 4.2), squeeze=False)
    for ax, res in zip(axes[0], front):
        for kind, style in (("taylorseer", "o-"), ("threshold", "s-"), ("easycache", "^-"), ("grid", "x"),
                            ("controller", "D-")):
            pts = sorted((STEPS / r["full_steps"], r["psnr"]) for r in res["rows"][kind])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=kind)
        label_axes(ax, res["model"])
    save_figure(fig, path, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("profile", "front"), required=True)
    ap.add_argument("--conditions", type=int, default=8)
    ap.add_argument("--first-condition", type=int, default=0,
                    help="with --only-controller: start at this condition (e.g. 8: conditions other than the report's)")
    ap.add_argument("--models", default="", help="comma-separated reference model names (default: all)")
    ap.add_argument("--fresh", action="store_true", help="drop the stored controller runs first")
    ap.add_argument("--store", default=str(OUT / "runs.json"), help="where the runs are kept")
    ap.add_argument("--only-controller", action="store_true",
                    help="front: only the controller's cells (a quick check while tuning; writes no report)")
    args = ap.parse_args(argv)
    load_pack()
    torch.set_num_threads(1)
    import platform
    store = Store(Path(args.store))
    if args.fresh:
        store.drop("controller")
    names = pack_module("nodes.reference").list_reference_models()
    if args.models:
        names = [n for n in names if n.replace(".safetensors", "") in args.models.split(",")]
    first = args.first_condition if args.only_controller else 0
    conds = list(range(first, first + args.conditions))
    command = " ".join(["python -m benchmarks.controller"] + list(sys.argv[1:] if argv is None else argv))
    results = []
    for name in names:
        bench = Bench(name, store, first + args.conditions)
        if args.only_controller:
            for x in SPEEDUPS:
                r = bench.mean(f"controller {x:g}x", dict(node="ClusCa", speedup=x), conds)
                print(bench.name, f"{x:g}x", round(r["full_steps"], 2), round(r["psnr"], 2), flush=True)
            continue
        res = measure_profile(bench, conds) if args.part == "profile" else measure_front(bench, conds)
        results.append(res)
        print(json.dumps(res if args.part == "profile" else res["cells"], default=float), flush=True)
    if args.only_controller:
        return 0
    if args.part == "profile":
        (OUT / "profiles.json").write_text(json.dumps(results, indent=1))
        return 0
    section = {"command": command, "conditions": args.conditions, "front": results,
               "machine": f"{platform.machine()}, 1 torch thread, torch {torch.__version__}"}
    # one report: the controller's section in docs/benchmarks.json / .md beside the suite's parts
    from .suite import put_part, update_report

    def update(data):
        stored = data.get("controller")
        if args.models and stored:
            section["front"] = merge_front(stored, results, command)
            section["command"] = stored["command"]
        put_part(data, "controller", section, section["command"], section["machine"])

    path = update_report(update)
    plot(section["front"], DOCS / "images" / "controller_front.png")
    print(speedup_table(section))
    print(f"wrote {path} and {DOCS / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
