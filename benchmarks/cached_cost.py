"""The cost of a cached step against its memory-traffic floor, before and after the partial cached modulation,
side by side in one process (mid-size random-weight models of benchmarks/presets.py, 50 steps, CPU).

Variants, alternating (after one warm-up run each): uncached (not with ``--calls-only``); ClusCa with the blocks' full modulation on cached
steps (``before``: the spec's ``cached_modulation`` switched off); ClusCa as shipped (``after``); optionally
ClusCa with a compact ``cache_dtype`` (``--compact int8``, ``--fp8`` = fp8-diff); optionally (``--basic``) the basic ClusCa node at its defaults (4x). Per variant: the wall-clock speed-up (ratio of median times), the
schedule bound, the share of the bound, and the median cached call as a share of the median full call of the
same run (both from one run, so load drifts on a shared machine cancel); also the speed-up the run's own call
times give (steps x its full call / the time of all its calls), which needs no uncached run.

The floor of a cached call is the bytes it must move divided by the machine's memory bandwidth (a large torch
copy): every cached Taylor factor read once, the residual streams read and written once per block, the
modulation weights a cached step uses, and the weights of the representatives' MLPs.

    .venv/bin/python -m benchmarks.cached_cost --family flux --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager

import torch

from clusca_core.config import COMPACT_DTYPES
from devkit.comfy_env import REPO, load_pack, pack_module

from .presets import PRESETS
from .speed import TIMER_KEY, call_timer
from .timing import interleaved, median, write_results


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write), the best of ``repeats``."""
    x = torch.ones(mib * 2 ** 20 // 4)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - t)
    return 2 * x.numel() * 4 / best


@contextmanager
def full_cached_modulation(adapter):
    """The ``before`` variant: cached steps compute the blocks' whole modulation."""
    saved = [(k, k.cached_modulation) for k in adapter.spec.block_kinds]
    try:
        for k, _ in saved:
            object.__setattr__(k, "cached_modulation", None)
        yield
    finally:
        for k, v in saved:
            object.__setattr__(k, "cached_modulation", v)


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def traffic(adapter, dm, summary: dict, slots: int, partial: bool) -> dict:
    """Bytes a cached call must move: cache factors, streams, used modulation weights, representatives' MLPs."""
    base = pack_module("nodes.adapters.base")
    geom = summary["geometry"]
    n_img, n_txt = geom.get("image tokens", 0), geom.get("text tokens", 0)
    tokens = {"img": n_img, "txt": n_txt}
    out = {"cache": summary["peak_cache_bytes"], "streams": 0, "modulation": 0, "mlp": 0}
    elem = next(dm.parameters()).element_size()
    for kind in adapter.spec.block_kinds:
        blocks = adapter.blocks(dm, kind.key) or []
        for block in blocks:
            for stream in kind.streams:
                n = sum(tokens[c] for c in kind.joint) if kind.joint else tokens.get(stream.name, 0)
                hidden = block_hidden(block)
                out["streams"] += 2 * n * hidden * elem * slots
                for branch in stream.branches:
                    if branch.mlp is not None and summary.get("tokens_per_cached_step"):
                        out["mlp"] += _param_bytes(base.submodule(block, branch.mlp.mlp))
            mods = sum(_param_bytes(base.submodule(block, m)) for m in kind.modulation_modules
                       if base.has_submodule(block, m))
            out["modulation"] += int(mods * (used_share(kind, block) if partial else 1.0))
    out["total"] = sum(out.values())
    return out


def block_hidden(block) -> int:
    for name in ("hidden_size", "hidden_dim", "dim"):
        v = getattr(block, name, None)
        if isinstance(v, int):
            return v
    for p in block.parameters():
        if p.ndim == 1:
            return p.shape[0]
    raise ValueError("unknown hidden size")


def used_share(kind, block) -> float:
    """The share of the modulation rows the kind's cached modulation computes (1.0 without one)."""
    if kind.cached_modulation is None:
        return 1.0
    weight = None
    for m in kind.modulation_modules:
        for p in pack_module("nodes.adapters.base").submodule(block, m).parameters():
            if p.ndim == 2:
                weight = p
                break
    args = {"vec": torch.zeros(1, weight.shape[1], device=weight.device, dtype=weight.dtype)}
    count = lambda mods: sum(t is not None for m in mods.values() for t in (m.shift, m.scale, m.gate))  # noqa: E731
    with torch.no_grad():
        return count(kind.cached_modulation(block, args, {})) / count(kind.modulation(block, args, {}))


def within_run(calls: list, n_cached: int) -> tuple[float, float]:
    """(median cached call, median full call) of one ClusCa run: its ``n_cached`` shortest calls are its cached
    ones (an order of magnitude shorter), the others its full ones; both come from the same run, interleaved in
    time, so machine load drifts cancel."""
    ordered = sorted(calls)
    return statistics.median(ordered[:n_cached]), statistics.median(ordered[n_cached:])


def bench(name: str, repeats: int, compact=(), calls_only: bool = False, basic: bool = False) -> dict:
    import comfy.patcher_extension as pe
    import nodes
    from devkit.tiny_models import sample

    p = PRESETS[name]()
    model = p.build()
    pos, neg = p.conds()
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    patched = {"uncached": model.clone(), "before": node.execute(model=model, **p.node_inputs).result[0],
               "after": node.execute(model=model, **p.node_inputs).result[0]}
    if calls_only:
        del patched["uncached"]
    for dtype in compact:       # ClusCa as shipped with a compact cache storage
        patched[f"after {dtype}"] = node.execute(model=model, cache_dtype=dtype, **p.node_inputs).result[0]
    if basic:       # the node a user drops in, at its default speed-up and the family's best settings
        patched["basic node"] = nodes.NODE_CLASS_MAPPINGS["ClusCa"].execute(model=model).result[0]
    adapter, _ = pack_module("nodes.adapters").find_adapter(model.model.diffusion_model)
    calls = {k: [] for k in patched}
    for k, m in patched.items():
        m = m.clone()
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, TIMER_KEY, call_timer(calls[k]))
        patched[k] = m

    def runner(key):
        def go():
            calls[key].clear()
            if key == "before":
                with full_cached_modulation(adapter):
                    sample(patched[key], pos, neg, steps=p.steps, cfg=p.cfg, sampler=p.sampler,
                           scheduler=p.scheduler, latent=p.latent(), seed=7)
            else:
                sample(patched[key], pos, neg, steps=p.steps, cfg=p.cfg, sampler=p.sampler, scheduler=p.scheduler,
                       latent=p.latent(), seed=7)
        return go

    times = interleaved({k: runner(k) for k in patched}, repeats)
    full_call = statistics.median(calls["uncached"]) if "uncached" in calls else float("nan")
    bw = copy_bandwidth()
    dm = model.model.diffusion_model
    slots = 2 if p.cfg > 1 else 1
    result = {"family": name, "model": p.description, "bandwidth_gb_s": bw / 1e9, "full_call_s": full_call,
              "times_s": times, "variants": {}}
    for k in patched:
        if k == "uncached":
            continue
        s = patched[k].model_options["transformer_options"]["clusca"].last_summary
        n_cached = s["evaluations_cached"]
        cached_call, run_full_call = within_run(calls[k], n_cached)
        ratio = median(times["uncached"]) / median(times[k]) if "uncached" in times else float("nan")
        # the speed-up the run's own calls give: every step at the run's full-call cost over what it spent
        per_call = len(calls[k]) * run_full_call / sum(calls[k])
        moved = traffic(adapter, dm, s, slots, partial=(k != "before"))
        result["variants"][k] = {
            "wall_clock_ratio": ratio, "schedule_bound": s["schedule_bound"],
            "fraction_of_bound": ratio / s["schedule_bound"], "cached_call_s": cached_call,
            "cached_over_full": cached_call / full_call, "run_full_call_s": run_full_call,
            "cached_over_full_within_run": cached_call / run_full_call,
            "per_call_speedup": per_call, "per_call_fraction_of_bound": per_call / s["schedule_bound"],
            "floor_bytes": moved, "floor_s": moved["total"] / bw, "floor_over_full": moved["total"] / bw / run_full_call,
            "peak_cache_bytes": s["peak_cache_bytes"]}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", choices=sorted(PRESETS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fp8", action="store_true", help="also time cache_dtype fp8-diff (= --compact fp8-diff)")
    ap.add_argument("--compact", action="append", default=[], choices=COMPACT_DTYPES,
                    help="also time ClusCa with this cache_dtype (repeatable)")
    ap.add_argument("--calls-only", action="store_true",
                    help="no uncached runs: per-call costs within each ClusCa run only (much shorter)")
    ap.add_argument("--basic", action="store_true", help="also time the basic ClusCa node at its defaults")
    ap.add_argument("--docs", action="store_true", help="also write the results into docs/benchmarks.json / .md")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "cached_cost.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_pack()
    results = []
    for name in args.family or list(PRESETS):
        compact = list(dict.fromkeys((["fp8-diff"] if args.fp8 else []) + args.compact))
        r = bench(name, args.repeats, compact, args.calls_only, args.basic)
        results.append(r)
        print(f"{name}: copy bandwidth {r['bandwidth_gb_s']:.1f} GB/s")
        for k, v in r["variants"].items():
            print(f"  {k:15s} wall clock {v['wall_clock_ratio']:.2f}x of bound {v['schedule_bound']:.2f}x "
                  f"({100 * v['fraction_of_bound']:.1f}%); from its calls {v['per_call_speedup']:.2f}x "
                  f"({100 * v['per_call_fraction_of_bound']:.1f}%); cached call {1000 * v['cached_call_s']:.1f} ms = "
                  f"{100 * v['cached_over_full_within_run']:.2f}% of its full call ({1000 * v['run_full_call_s']:.0f} ms); "
                  f"floor {v['floor_bytes']['total'] / 2 ** 20:.0f} MiB -> {1000 * v['floor_s']:.1f} ms = "
                  f"{100 * v['floor_over_full']:.2f}%", flush=True)
    machine = write_results(args.out, results)
    if args.docs:
        from .suite import store_part
        command = " ".join(["python -m benchmarks.cached_cost"] + list(sys.argv[1:] if argv is None else argv))
        print("wrote", store_part("cached_cost", {"machine": machine, "results": results}, command, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
