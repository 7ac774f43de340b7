"""The main job for now: a small FLUX-architecture model sampled through real ComfyUI, without and with
ClusCa, side by side. Prints the speed ratio and the fidelity; writes latent previews to ``out/demo/``.

Run with ``make demo`` (which prepares the environment first).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .comfy_env import REPO, load_pack
from .metrics import psnr, relative_l2, ssim


def latent_preview(latent: torch.Tensor, path: Path) -> None:
    from PIL import Image
    x = latent[0, :3].float()
    x = (x - x.amin(dim=(1, 2), keepdim=True)) / (x.amax(dim=(1, 2), keepdim=True) - x.amin(dim=(1, 2), keepdim=True) + 1e-8)
    img = Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype("uint8")).resize((256, 256), Image.NEAREST)
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=32, help="latent height and width")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "out" / "demo"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    load_pack()
    import nodes
    from .tiny_models import flux_cond, sample, tiny_flux

    model = tiny_flux(0, hidden=256, heads=4, depth=2, single=4, context_dim=256, vec_dim=64)
    pos = flux_cond(1, tokens=64, context_dim=256, vec_dim=64)
    neg = flux_cond(2, tokens=64, context_dim=256, vec_dim=64)
    patched = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"].execute(model=model).result[0]

    def run(m):
        t = time.perf_counter()
        out = sample(m, pos, neg, steps=args.steps, cfg=1.0, height=args.size, width=args.size, seed=42)
        return out, time.perf_counter() - t

    run(model)  # warm-up (first-call allocations)
    times = {"uncached": [], "clusca": []}
    for _ in range(args.repeats):
        base, t = run(model)
        times["uncached"].append(t)
        out, t = run(patched)
        times["clusca"].append(t)
    summary = patched.model_options["transformer_options"]["clusca"].last_summary
    t_base, t_clusca = sum(times["uncached"]), sum(times["clusca"])
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    latent_preview(base, outdir / "uncached.png")
    latent_preview(out, outdir / "clusca.png")
    print(f"FLUX-architecture model (hidden 256, 2+4 blocks, random weights), {args.steps} steps, "
          f"{args.size}x{args.size} latent, through ComfyUI {_comfy_version()} on CPU")
    print(f"  uncached : {t_base / args.repeats:.2f} s per image")
    print(f"  ClusCa   : {t_clusca / args.repeats:.2f} s per image "
          f"({summary['full_steps']} full + {summary['cached_steps']} cached steps)")
    print(f"  speed-up : {t_base / t_clusca:.2f}x wall clock (schedule bound {summary['schedule_bound']:.2f}x, "
          f"estimated FLOPs {summary['estimated_flops_speedup']:.2f}x)")
    print(f"  fidelity : PSNR {psnr(out, base):.2f} dB, SSIM {ssim(out, base):.4f}, "
          f"relative L2 {relative_l2(out, base):.4f} (final latent vs uncached)")
    print(f"  previews : {outdir / 'uncached.png'}, {outdir / 'clusca.png'}")
    return 0


def _comfy_version() -> str:
    import comfyui_version
    return comfyui_version.__version__


if __name__ == "__main__":
    raise SystemExit(main())
