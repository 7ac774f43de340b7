"""Wall-clock speed of ClusCa against uncached sampling, per model family, measured side by side on CPU.

For each family (mid-size architecture, random weights, 50 steps): uncached and ClusCa sampling alternate in
one process (``--repeats`` times each, after one warm-up run each); the speed-up is the ratio of the median
times and is compared with the schedule bound (steps / full steps). A timing wrapper on the diffusion model
also measures every model call, which gives the cost of a cached step relative to a full one directly.

    make bench                                   # all families
    .venv/bin/python -m benchmarks.speed --family flux --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from devkit.comfy_env import REPO, load_pack

from .presets import PRESETS
from .timing import interleaved, median, write_results

TIMER_KEY = "clusca_bench_timer"


def call_timer(log: list):
    """A DIFFUSION_MODEL wrapper recording the duration of every model call."""
    def wrapper(executor, *args, **kwargs):
        t = time.perf_counter()
        out = executor(*args, **kwargs)
        log.append(time.perf_counter() - t)
        return out
    return wrapper


def bench_family(name: str, repeats: int) -> dict:
    import comfy.patcher_extension as pe
    import nodes
    from devkit.metrics import psnr
    from devkit.tiny_models import sample

    p = PRESETS[name]()
    model = p.build()
    pos, neg = p.conds()
    patched = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=model, **p.node_inputs).result[0]
    calls = {"uncached": [], "clusca": []}
    timed = {}
    for key, m in (("uncached", model.clone()), ("clusca", patched.clone())):
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, TIMER_KEY, call_timer(calls[key]))
        timed[key] = m
    outputs = {}

    def runner(key):
        def go():
            calls[key].clear()
            outputs[key] = sample(timed[key], pos, neg, steps=p.steps, cfg=p.cfg, sampler=p.sampler,
                                  scheduler=p.scheduler, latent=p.latent(), seed=7)
        return go

    times = interleaved({"uncached": runner("uncached"), "clusca": runner("clusca")}, repeats)
    s = timed["clusca"].model_options["transformer_options"]["clusca"].last_summary
    t_base, t_clusca = median(times["uncached"]), median(times["clusca"])
    ratio = t_base / t_clusca
    bound = s["schedule_bound"]
    # Per-call costs from the last run of each: a cached call is an order of magnitude shorter than a full
    # one, so the ClusCa run's n_cached shortest calls are its cached calls.
    full_call = statistics.median(calls["uncached"])
    n_cached = s["evaluations_cached"]
    cached_call = statistics.median(sorted(calls["clusca"])[:n_cached]) if n_cached else float("nan")
    return {
        "family": name, "model": p.description, "steps": p.steps, "cfg": p.cfg, "sampler": p.sampler,
        "node_inputs": p.node_inputs, "full_steps": s["full_steps"], "cached_steps": s["cached_steps"],
        "geometry": s["geometry"], "times_uncached_s": times["uncached"], "times_clusca_s": times["clusca"],
        "wall_clock_ratio": ratio, "schedule_bound": bound, "fraction_of_bound": ratio / bound,
        "full_call_s": full_call, "cached_call_s": cached_call, "cached_step_cost_fraction": cached_call / full_call,
        "estimated_flops_speedup": s["estimated_flops_speedup"], "peak_cache_bytes": s["peak_cache_bytes"],
        "psnr_db": psnr(outputs["clusca"], outputs["uncached"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", choices=sorted(PRESETS), help="repeatable; default: all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "speed.json"))
    args = ap.parse_args(argv)
    load_pack()
    results = []
    for name in args.family or list(PRESETS):
        r = bench_family(name, args.repeats)
        results.append(r)
        print(f"{name}: uncached {median(r['times_uncached_s']):.1f} s, ClusCa {median(r['times_clusca_s']):.1f} s "
              f"-> {r['wall_clock_ratio']:.2f}x wall clock vs bound {r['schedule_bound']:.2f}x "
              f"({100 * r['fraction_of_bound']:.1f}% of bound); cached step {1000 * r['cached_call_s']:.0f} ms = "
              f"{100 * r['cached_step_cost_fraction']:.2f}% of a full step ({1000 * r['full_call_s']:.0f} ms); "
              f"PSNR {r['psnr_db']:.1f} dB", flush=True)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
