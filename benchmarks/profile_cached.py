"""Where the time of a cached model call goes: torch.profiler over the cached calls of one ClusCa run of a
mid-size model (benchmarks/presets.py), aggregated per op, beside the time of a full call and the memory-traffic
floor of a cached call.

    .venv/bin/python -m benchmarks.profile_cached --family flux --top 25
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from devkit.comfy_env import load_pack

from .presets import PRESETS

TIMER_KEY = "clusca_bench_profile"


def profile_family(name: str, top: int = 25, node_inputs: dict | None = None) -> dict:
    import comfy.patcher_extension as pe
    import nodes
    from devkit.tiny_models import sample
    from torch.profiler import ProfilerActivity, profile

    p = PRESETS[name]()
    model = p.build()
    pos, neg = p.conds()
    inputs = dict(p.node_inputs, **(node_inputs or {}))
    patched = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=model, **inputs).result[0].clone()
    calls = []

    def wrapper(executor, *args, **kwargs):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            out = executor(*args, **kwargs)
            dt = time.perf_counter() - t
        calls.append((dt, prof.key_averages()))
        return out

    patched.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, TIMER_KEY, wrapper)
    sample(patched, pos, neg, steps=p.steps, cfg=p.cfg, sampler=p.sampler, scheduler=p.scheduler,
           latent=p.latent(), seed=7)
    s = patched.model_options["transformer_options"]["clusca"].last_summary
    n_cached = s["evaluations_cached"]
    ordered = sorted(calls, key=lambda c: c[0])
    cached, full = ordered[:n_cached], ordered[n_cached:]
    per_op = defaultdict(lambda: [0.0, 0])
    for _, events in cached:
        for e in events:
            per_op[e.key][0] += e.self_cpu_time_total / 1e3
            per_op[e.key][1] += e.count
    total_ms = sum(d for d, _ in cached) * 1e3
    print(f"{name}: {n_cached} cached calls, {total_ms / max(n_cached, 1):.2f} ms each (profiled); "
          f"full call {1e3 * sorted(d for d, _ in full)[len(full) // 2]:.1f} ms")
    rows = sorted(per_op.items(), key=lambda kv: -kv[1][0])[:top]
    for op, (ms, count) in rows:
        print(f"  {op:45s} {ms / max(n_cached, 1):8.3f} ms/call  {count / max(n_cached, 1):7.1f} calls/call")
    return {"cached_ms": total_ms / max(n_cached, 1), "ops": {k: v for k, v in rows}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", choices=sorted(PRESETS))
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_pack()
    for name in args.family or list(PRESETS):
        profile_family(name, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
