"""Fidelity cost of the compact cache storage (``cache_dtype`` fp8 / fp8-diff) on the trained reference models.

For every reference model (``reference_models/*.safetensors``), the same conditions (prompts or classes, seeds),
sampler and steps for every method, as ``benchmarks.suite --part fidelity`` does: PSNR of the decoded output of
ClusCa against the uncached output, with the default cache dtype (auto = the model's dtype) and with each
compact storage; the loss is the difference of the mean PSNRs. Two schedules: the Apply ClusCa node left at
its defaults (the family's reference settings, fixed interval) and the speed-up controller at 4x (the basic
node's default).

    .venv/bin/python -m benchmarks.compact --seeds 8        # writes out/bench/compact.json
    .venv/bin/python -m benchmarks.compact --seeds 8 --dtypes int8 --docs   # also into docs/benchmarks.json / .md
    .venv/bin/python -m benchmarks.compact --report --docs --out out/bench/compact.json   # an earlier run, into the docs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from clusca_core.config import COMPACT_DTYPES
from devkit.comfy_env import REPO, load_pack

from .methods import Method

DTYPES = ("auto", "bf16") + COMPACT_DTYPES
SCHEDULES = {"node defaults": {}, "speed-up 4x": dict(target_speedup=4.0, warmup_steps=2, fresh_interval=5)}
#: the target of issue 14: the compact storage may become the default if it loses at most this on every model
MAX_LOSS_DB = 0.3


def methods(dtypes=DTYPES) -> list[Method]:
    return [Method(f"{sched} | {dt}", sched, node=dict(settings, cache_dtype=dt), extra={"node_defaults": True})
            for sched, settings in SCHEDULES.items() for dt in dtypes]


def losses(results: list[dict]) -> dict:
    """model -> schedule -> dtype -> (mean PSNR, loss vs auto in dB, peak cache bytes)."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if " | " not in r["method"]:
            continue
        sched, dt = r["method"].split(" | ")
        table[r["model"]][sched][dt] = {"psnr": r.get("psnr"), "peak_cache_bytes": r["peak_cache_bytes"]}
    for model in table.values():
        for row in model.values():
            for v in row.values():
                v["loss_db"] = row["auto"]["psnr"] - v["psnr"]
    return table


def worst_losses(table: dict) -> dict:
    """storage -> its largest loss against auto over the models and schedules of ``table`` (:func:`losses`)."""
    worst = defaultdict(float)
    for scheds in table.values():
        for row in scheds.values():
            for dt, v in row.items():
                worst[dt] = max(worst[dt], v["loss_db"])
    return dict(worst)


def _cell(row: dict, dtype: str) -> str:
    v = row[dtype]
    change = "reference" if dtype == "auto" else f"{-v['loss_db']:+.2f} dB"
    return f"{v['psnr']:.2f} dB ({change}), {v['peak_cache_bytes'] / 2 ** 20:.1f} MiB"


def markdown(table: dict) -> str:
    """One row per model and schedule: mean PSNR and loss of each storage, and its peak cache bytes."""
    dtypes = [dt for dt in DTYPES if any(dt in row for scheds in table.values() for row in scheds.values())]
    out = ["| model | schedule | " + " | ".join(dtypes) + " |", "|---|---|" + "---|" * len(dtypes)]
    for model, scheds in table.items():
        for sched, row in scheds.items():
            cells = [_cell(row, dt) if dt in row else "" for dt in dtypes]
            out.append(f"| {model.removesuffix('.safetensors')} | {sched} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--models", default="", help="only these reference models (comma-separated names)")
    ap.add_argument("--dtypes", default=",".join(DTYPES[1:]),
                    help="the storages to compare with auto (comma-separated; default: all)")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "compact.json"))
    ap.add_argument("--report", action="store_true", help="print the markdown table of an earlier --out file")
    ap.add_argument("--docs", action="store_true",
                    help="also merge the losses into the report (docs/benchmarks.json / .md, part 'compact')")
    args = ap.parse_args(argv)
    if args.report:
        stored = json.loads(Path(args.out).read_text())
        print(markdown(stored["losses"]))
        if args.docs:
            write_docs(stored)
        return 0
    load_pack()
    from .suite import run_fidelity
    dtypes = ["auto"] + [dt for dt in args.dtypes.split(",") if dt and dt != "auto"]
    results = run_fidelity(methods(dtypes), args.seeds, args.steps, args.cfg, [m for m in args.models.split(",") if m])
    table = losses(results)
    worst = worst_losses(table)
    for model, scheds in table.items():
        for sched, row in scheds.items():
            print(f"{model} [{sched}]: " + ", ".join(
                f"{dt} {v['psnr']:.2f} dB (loss {v['loss_db']:+.2f} dB, {v['peak_cache_bytes'] / 2 ** 20:.1f} MiB)"
                for dt, v in row.items()), flush=True)
    for dt in [dt for dt in dtypes if dt not in ("auto", "bf16")]:
        verdict = "meets" if worst[dt] <= MAX_LOSS_DB else "does NOT meet"
        print(f"{dt}: worst loss {worst[dt]:.2f} dB over models and schedules -> {verdict} the "
              f"{MAX_LOSS_DB} dB bound")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.compact"] + list(sys.argv[1:] if argv is None else argv))
    stored = {"seeds": args.seeds, "steps": args.steps, "cfg": args.cfg, "command": command, "results": results,
              "losses": table, "worst_loss_db": worst}
    out.write_text(json.dumps(stored, indent=2))
    print(f"results in {out}")
    if args.docs:
        write_docs(stored)
    return 0


def write_docs(stored: dict) -> None:
    """Merge a run's losses into the report's ``compact`` part (model -> schedule -> storage), each storage with
    the command that measured it (for a run stored without one: rebuilt from its seeds and storages)."""
    import platform
    from .suite import put_part, update_report
    dtypes = [dt for dt in DTYPES[1:] if any(dt in row for s in stored["losses"].values() for row in s.values())]
    command = stored.get("command") or f"python -m benchmarks.compact --seeds {stored['seeds']} --dtypes {','.join(dtypes)}"

    def update(data):
        part = data.get("compact") or {"losses": {}, "commands": {}, "max_loss_db": MAX_LOSS_DB}
        for model, scheds in stored["losses"].items():
            for sched, row in scheds.items():
                part["losses"].setdefault(model, {}).setdefault(sched, {}).update(row)
        part["commands"].update({dt: command for dt in dtypes})
        put_part(data, "compact", part, "python -m benchmarks.compact --docs", platform.machine())

    print("wrote", update_report(update))


if __name__ == "__main__":
    raise SystemExit(main())
