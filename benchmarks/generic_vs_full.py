"""What a user loses with the generic block forecast instead of a family's full ClusCa adapter.

On the trained FLUX reference model (``reference_models/flux_shapes.safetensors``), the same prompts, seeds,
sampler and schedule for every method: uncached; the FLUX.1 adapter (ClusCa, and its TaylorSeer mode: the same
per-branch forecast without the cluster refresh); the generic block forecast forced on the same model (each
block's output update forecast as a whole). Every cached method uses the same fixed schedule (warm-up 3, a full
step every N), so they compare at equal full steps. The FLUX.1 adapter's error-adaptive presets (quality /
balanced / fast), which need its representatives' probe and so do not exist with the generic forecast, are
measured too (their full steps vary per condition). PSNR / SSIM of the decoded output against the uncached one,
averaged over the conditions.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_vs_full            # 8 conditions, N = 3, 5, 7
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_vs_full --seeds 2 --intervals 5

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.generic_vs_full --model wan_shapes --seeds 4 --intervals 3,5
(On models without the old presets, e.g. Wan, only the fixed-schedule rows are measured.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from devkit.comfy_env import REPO, load_pack, pack_module

#: the methods: (name, adapter: "family" or "generic", node inputs besides the interval)
METHODS = (
    ("ClusCa (family adapter)", "family", dict(mode="clusca")),
    ("TaylorSeer per branch (family adapter, no clusters)", "family", dict(mode="taylorseer")),
    ("generic block forecast", "generic", dict(mode="taylorseer")),
)
#: the FLUX.1 adapter's error-adaptive presets (the generic forecast has none: it falls back to the fixed schedule)
PRESETS = ("quality", "balanced", "fast")


def record(rows: dict, interval, name: str, image, base, summary: dict, fidelity) -> None:
    assert summary is not None and "disabled" not in summary, (name, summary)
    row = rows.setdefault((interval, name), {"full_steps": [], "psnr": [], "ssim": [], "cache_bytes": []})
    row["full_steps"].append(summary["full_steps"])
    row["cache_bytes"].append(summary["peak_cache_bytes"])
    f = fidelity(image, base)
    row["psnr"].append(f["psnr"])
    row["ssim"].append(f["ssim"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8, help="prompt/seed conditions")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--intervals", default="3,5,7")
    ap.add_argument("--model", default="flux_shapes", help="reference model (flux_shapes, wan_shapes, ...)")
    ap.add_argument("--out", default=str(REPO / "out" / "generic_vs_full.json"))
    args = ap.parse_args(argv)
    load_pack()
    from devkit.tiny_models import sample
    from .suite import clusca_summary, fidelity

    ref = pack_module("nodes.reference")
    config_cls = pack_module("clusca_core.config").ClusCaConfig
    apply = pack_module("nodes.patching").apply_clusca
    generic = pack_module("nodes.adapters.generic")
    model, spec = ref.load_reference_model(args.model)
    adapter, why = generic.detect(model.model.diffusion_model, args.model)
    if adapter is None:
        raise SystemExit(f"the generic forecast does not take {args.model}: {why}")
    family_key = pack_module("nodes.adapters").find_adapter(model.model.diffusion_model)[0].key
    presets = PRESETS if pack_module("nodes.presets").presets_for(family_key) else ()
    intervals = [int(n) for n in args.intervals.split(",")]
    examples = spec.prompts.get("examples") or []
    conditions = [(examples[i % len(examples)], 1000 + i) for i in range(args.seeds)]
    rows: dict = {}
    started = time.perf_counter()
    for ci, (prompt, seed) in enumerate(conditions):
        pos, neg = spec.conditioning(prompt)
        latent = spec.empty_latent(1)["samples"]
        base = spec.decode(sample(model, pos, neg, steps=args.steps, cfg=args.cfg, latent=latent, seed=seed))
        for n in intervals:
            for name, kind, inputs in METHODS:
                config = config_cls(fresh_interval=n, warmup_steps=3, taylor_order=1, **inputs)
                m = apply(model, config, adapter=adapter if kind == "generic" else None)
                image = spec.decode(sample(m, pos, neg, steps=args.steps, cfg=args.cfg, latent=latent, seed=seed))
                s = clusca_summary(m)
                assert s is not None and (s.get("method") == generic.METHOD) == (kind == "generic"), s
                record(rows, n, name, image, base, s, fidelity)
        for preset in presets:
            name = f"preset {preset} (family adapter, error-adaptive)"
            m = apply(model, config_cls(preset=preset))
            image = spec.decode(sample(m, pos, neg, steps=args.steps, cfg=args.cfg, latent=latent, seed=seed))
            record(rows, "adaptive", name, image, base, clusca_summary(m), fidelity)
        print(f"condition {ci + 1}/{len(conditions)} done ({time.perf_counter() - started:.0f} s)", flush=True)

    table = []
    for (n, name), row in rows.items():
        table.append({"interval": n, "method": name, "conditions": len(row["psnr"]),
                      "full_steps": statistics.mean(row["full_steps"]),
                      "psnr": statistics.mean(row["psnr"]), "psnr_min": min(row["psnr"]),
                      "ssim": statistics.mean(row["ssim"]), "peak_cache_bytes": max(row["cache_bytes"])})
    print(f"\nreference model {args.model}, {args.steps} steps, cfg {args.cfg}, {len(conditions)} conditions, "
          "PSNR / SSIM of the decoded output vs uncached:\n")
    print("| N | method | full steps | PSNR dB (mean) | PSNR dB (worst) | SSIM | cache |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['interval']} | {r['method']} | {r['full_steps']:.1f} | {r['psnr']:.2f} | {r['psnr_min']:.2f} | "
              f"{r['ssim']:.4f} | {r['peak_cache_bytes'] / 2 ** 20:.1f} MiB |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "cfg": args.cfg, "rows": table}, indent=1))
    print(f"\nwritten {out}; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
