"""Process memory and ClusCa cache bytes over many back-to-back sampling runs (lifetime check).

    .venv/bin/python -m devkit.lifetime --runs 50
"""

from __future__ import annotations

import argparse
import gc
import os

import torch


def rss_bytes() -> int:
    import psutil
    return psutil.Process(os.getpid()).memory_info().rss


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def memory_curve(runs: int = 50, steps: int = 8) -> list[dict]:
    """Sample a tiny FLUX model with ClusCa ``runs`` times; after each run record RSS, live tensors and the
    run's peak cache bytes."""
    from .comfy_env import load_pack
    load_pack()
    import nodes
    from .tiny_models import flux_cond, sample, tiny_flux

    model = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=tiny_flux(0)).result[0]
    holder = model.model_options["transformer_options"]["clusca"]
    pos, neg = flux_cond(1), flux_cond(2)
    curve = []
    for i in range(runs):
        sample(model, pos, neg, steps=steps, cfg=2.0, seed=i)
        curve.append({"run": i + 1, "rss_bytes": rss_bytes(), "live_tensors": live_tensors(),
                      "peak_cache_bytes": holder.last_summary["peak_cache_bytes"],
                      "run_state_alive": holder.run is not None})
    return curve


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)
    curve = memory_curve(args.runs)
    for row in curve:
        print(f"run {row['run']:3d}: RSS {row['rss_bytes'] / 2**20:8.1f} MiB, live tensors {row['live_tensors']:6d}, "
              f"cache {row['peak_cache_bytes'] / 2**10:8.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
