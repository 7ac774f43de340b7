"""ClusCa on full-size architectures on a GPU (random weights, real ComfyUI): wall-clock speed-up against the
schedule's bound, a cached call against a full one, peak VRAM with and without ClusCa, and the cost of
``cache_device=cpu``; beside them the memory-traffic floor of a cached call (bytes it must move / measured copy
bandwidth of the device).

Subjects: FLUX.1-dev (19 double + 38 single blocks, hidden 3072, 24 heads) at 1024x1024 (4096 image + 512
text tokens), bf16, 50 steps, CFG 1 (guidance 3.5); Wan 2.1 1.3B (30 blocks, dim 1536, 12 heads, FFN 8960) at
832x480 and 33 frames (14040 tokens), bf16, 50 steps, CFG 5. The Apply ClusCa node at its defaults (the family's
reference settings: interval 5, warm-up 3). Variants alternate in one process after a warm-up run of each.

    CLUSCA_GPU=1 .venv/bin/python -m benchmarks.gpu                 # on a CUDA machine (a few minutes on an H100)
    .venv/bin/python -m benchmarks.gpu --tiny --steps 6            # tiny sizes on CPU: checks it runs end to end

Writes ``out/bench/gpu.json`` and prints one block per subject.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
TIMER_KEY = "clusca_bench_gpu_timer"


#: FLUX.1-dev's transformer (``devkit.tiny_models.flux_config`` fields) and Wan 2.1 1.3B's (``wan_config``)
FLUX_DEV = dict(hidden=3072, heads=24, depth=19, single=38, context_dim=4096, vec_dim=768, axes_dim=(16, 56, 56))
WAN_1_3B = dict(dim=1536, heads=12, layers=30, ffn_dim=8960)
WAN_14B = dict(dim=5120, heads=40, layers=40, ffn_dim=13824)


@dataclass
class Subject:
    name: str
    build: Callable[[torch.device, torch.dtype], object]    # -> ModelPatcher
    conds: Callable[[], tuple]                                # -> (positive, negative)
    latent: Callable[[], torch.Tensor]
    cfg: float


def init_on_device(module: torch.nn.Module, seed: int) -> None:
    """Random weights where the model lives (unit-variance activations, norms' scales at 1): seconds on a GPU
    even at 12B parameters."""
    gen = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and (name.endswith("scale") or ("norm" in name and name.endswith("weight"))):
                p.fill_(1.0)
            elif p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
            else:
                p.normal_(0.0, 0.02, generator=gen)


def _patcher(base, device):
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=torch.device("cpu"))


def _builder(model_config):
    """``build(device, dtype)`` of a subject: the ComfyUI model of ``model_config()`` in ``dtype``, seeded
    random weights initialised on ``device``, in a ModelPatcher."""
    def build(device, dtype):
        mc = model_config()
        mc.set_inference_dtype(dtype, None)
        base = mc.get_model({}, device=device)
        init_on_device(base.diffusion_model, 0)
        return _patcher(base, device)
    return build


def flux_subject(tiny: bool) -> Subject:
    import comfy.supported_models as sm
    from devkit.tiny_models import flux_config
    size = dict(hidden=64, heads=4, depth=2, single=2, context_dim=64, vec_dim=32) if tiny else FLUX_DEV
    txt = 8 if tiny else 512
    px = 128 if tiny else 1024

    build = _builder(lambda: sm.Flux(flux_config(**size)))

    def conds():
        g = torch.Generator().manual_seed(1)
        c = [[torch.randn(1, txt, size["context_dim"], generator=g),
              {"pooled_output": torch.randn(1, size["vec_dim"], generator=g), "guidance": 3.5}]]
        return c, c

    return Subject(f"FLUX.1-dev-sized ({size['depth']}+{size['single']} blocks, hidden {size['hidden']}) "
                   f"{px}x{px}", build, conds, lambda: torch.zeros(1, 16, px // 8, px // 8), cfg=1.0)


def wan_subject(tiny: bool) -> Subject:
    from devkit.tiny_wan import KINDS, wan_config
    size = dict(dim=64, heads=4, layers=2, ffn_dim=128) if tiny else WAN_1_3B
    text_dim, txt = (64, 8) if tiny else (4096, 512)
    frames, h, w = (3, 8, 8) if tiny else ((33 - 1) // 4 + 1, 480 // 8, 832 // 8)

    build = _builder(lambda: KINDS["t2v"][0](wan_config("t2v", text_dim=text_dim, **size)))

    def conds():
        g = torch.Generator().manual_seed(2)
        return [[torch.randn(1, txt, text_dim, generator=g), {}]], [[torch.randn(1, txt, text_dim, generator=g), {}]]

    return Subject(f"Wan-2.1-1.3B-sized ({size['layers']} blocks, dim {size['dim']}) "
                   f"{w * 8}x{h * 8}, {(frames - 1) * 4 + 1} frames", build, conds,
                   lambda: torch.zeros(1, 16, frames, h, w), cfg=5.0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_timer(log: list, device: torch.device):
    def wrapper(executor, *args, **kwargs):
        synchronize(device)
        t = time.perf_counter()
        out = executor(*args, **kwargs)
        synchronize(device)
        log.append(time.perf_counter() - t)
        return out
    return wrapper


def device_bandwidth(device: torch.device, mib: int = 1024) -> float:
    """Bytes per second of a large copy on ``device`` (read + write), the best of five."""
    x = torch.ones(mib * 2 ** 20 // 4, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        t = time.perf_counter()
        y.copy_(x)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    del x, y
    return 2 * mib * 2 ** 20 / best


def run_subject(subject: Subject, device: torch.device, dtype: torch.dtype, steps: int, repeats: int) -> dict:
    import comfy.patcher_extension as pe
    import comfy.sample
    import nodes
    from devkit.comfy_env import pack_module
    from .cached_cost import traffic

    model = subject.build(device, dtype)
    pos, neg = subject.conds()
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    variants = {"uncached": model.clone(), "clusca": node.execute(model=model).result[0],
                "clusca cache_device=cpu": node.execute(model=model, cache_device="cpu").result[0]}
    calls = {k: [] for k in variants}
    for k in variants:
        m = variants[k].clone()
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, TIMER_KEY, call_timer(calls[k], device))
        variants[k] = m
    peaks: dict = {}
    times: dict = {k: [] for k in variants}

    def go(key):
        calls[key].clear()
        latent = subject.latent()
        noise = comfy.sample.prepare_noise(latent, 7)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        t = time.perf_counter()
        with torch.inference_mode():
            comfy.sample.sample(variants[key], noise, steps, subject.cfg, "euler", "simple", pos, neg, latent,
                                disable_pbar=True, seed=7)
        synchronize(device)
        dt = time.perf_counter() - t
        if device.type == "cuda":
            peaks[key] = torch.cuda.max_memory_allocated(device)
        return dt

    for k in variants:          # warm-up
        go(k)
    for _ in range(repeats):
        for k in variants:
            times[k].append(go(k))
    bw = device_bandwidth(device, 64 if device.type == "cpu" else 1024)
    full_call = statistics.median(calls["uncached"])
    adapter, _ = pack_module("nodes.adapters").find_adapter(model.model.diffusion_model)
    out = {"subject": subject.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "dtype": str(dtype), "steps": steps, "cfg": subject.cfg, "bandwidth_gb_s": bw / 1e9,
           "full_call_s": full_call, "times_s": times, "peak_vram_bytes": peaks, "variants": {}}
    base_time = statistics.median(times["uncached"])
    for k in variants:
        if k == "uncached":
            continue
        s = variants[k].model_options["transformer_options"]["clusca"].last_summary
        n_cached = s["evaluations_cached"]
        cached_call = statistics.median(sorted(calls[k])[:n_cached]) if n_cached else float("nan")
        ratio = base_time / statistics.median(times[k])
        moved = traffic(adapter, model.model.diffusion_model, s, 2 if subject.cfg > 1 else 1, partial=True)
        out["variants"][k] = {
            "wall_clock_ratio": ratio, "schedule_bound": s["schedule_bound"],
            "fraction_of_bound": ratio / s["schedule_bound"], "full_steps": s["full_steps"],
            "cached_call_s": cached_call, "cached_over_full": cached_call / full_call,
            "peak_cache_bytes": s["peak_cache_bytes"], "floor_bytes": moved,
            "floor_over_full": moved["total"] / bw / full_call,
            "peak_vram_over_uncached_bytes": (peaks[k] - peaks["uncached"]) if peaks else None,
        }
    del variants, model
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CPU is fine): check the script end to end")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", choices=("flux", "wan"), action="append")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "gpu.json"))
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    if cuda:
        os.environ["CLUSCA_GPU"] = "1"          # ComfyUI in its normal GPU mode (devkit.comfy_env.bootstrap)
    elif not args.tiny:
        print("no CUDA device: run with --tiny to check the script on CPU", file=sys.stderr)
        return 2
    from devkit.comfy_env import load_pack
    load_pack()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    subjects = {"flux": flux_subject, "wan": wan_subject}
    results = []
    for key in args.only or list(subjects):
        r = run_subject(subjects[key](args.tiny), device, dtype, args.steps, args.repeats)
        results.append(r)
        print(f"{r['subject']} on {r['device']} ({r['dtype']}, {r['steps']} steps): full call "
              f"{1000 * r['full_call_s']:.1f} ms, copy bandwidth {r['bandwidth_gb_s']:.0f} GB/s")
        for k, v in r["variants"].items():
            vram = v["peak_vram_over_uncached_bytes"]
            print(f"  {k}: {v['wall_clock_ratio']:.2f}x of bound {v['schedule_bound']:.2f}x "
                  f"({100 * v['fraction_of_bound']:.1f}%); cached call {100 * v['cached_over_full']:.2f}% of full "
                  f"(floor {100 * v['floor_over_full']:.2f}%); cache {v['peak_cache_bytes'] / 2 ** 30:.2f} GiB"
                  + ("" if vram is None else f"; peak VRAM +{vram / 2 ** 30:.2f} GiB over uncached"), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
