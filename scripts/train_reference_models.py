#!/usr/bin/env python
"""Train one ClusCa reference model on procedurally drawn shapes, on the CPU, and write it with its sample grid.

    .venv/bin/python scripts/train_reference_models.py --family flux
    .venv/bin/python scripts/train_reference_models.py --family hunyuan_video
    .venv/bin/python scripts/train_reference_models.py --family dit
    .venv/bin/python scripts/train_reference_models.py --family qwen_image
    .venv/bin/python scripts/train_reference_models.py --family flux2
    .venv/bin/python scripts/train_reference_models.py --family wan
    .venv/bin/python scripts/train_reference_models.py --family flux --grid-only   # redraw docs/images/*.png

Each run: builds the architecture through ComfyUI's own model classes (FLUX: ``comfy.supported_models.
FluxSchnell``; HunyuanVideo: ``comfy.supported_models.HunyuanVideo``; DiT: the pack's ``DiTModelConfig``;
Qwen-Image: ``QwenImage``; FLUX.2: ``Flux2``; Wan: ``WAN21_T2V``), initialises it under a fixed seed, (FLUX /
FLUX.2 / HunyuanVideo) checks that the out-of-place training path (``devkit/oop_blocks.py``) equals ComfyUI's
blocks, trains the diffusion model and the prompt embedding tables jointly through ``BaseModel.apply_model``
(ComfyUI's own sigma -> timestep conversion and prediction parameterisation; Qwen-Image / FLUX.2 / Wan get
their conditioning through the model's own ``extra_conds``, as in sampling), keeps an EMA of the weights, stores the EMA weights as float16 in
``reference_models/<name>.safetensors`` with the config as metadata, loads that file back through the pack's
loader, samples a grid through ComfyUI's sampler and writes ``docs/images/<name>.png``. Everything is
deterministic for a given seed and thread count; the log goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))   # last, so that ComfyUI's top-level ``nodes`` module is not shadowed

NAMES = {"flux": "flux_shapes", "hunyuan_video": "hunyuan_video_shapes", "dit": "dit_shapes",
         "qwen_image": "qwen_image_shapes", "flux2": "flux2_shapes", "wan": "wan_shapes"}
#: families trained through the out-of-place path of ComfyUI's FLUX-style blocks (devkit/oop_blocks.py)
OUT_OF_PLACE = ("flux", "hunyuan_video", "flux2")

#: grid prompts (rows) per family; columns are seeds
GRID_PROMPTS = {
    "flux": ["red circle", "green square", "blue triangle", "yellow ring", "magenta circle", "cyan triangle",
             "blue square", "red ring"],
    "dit": ["red circle", "green square", "blue triangle", "yellow ring", "magenta circle", "cyan triangle",
            "blue square", "red ring"],
    "hunyuan_video": ["red circle moving right", "blue square moving left", "yellow triangle moving up",
                      "green ring moving down", "magenta square moving right", "cyan circle moving up"],
}
GRID_PROMPTS["qwen_image"] = GRID_PROMPTS["flux2"] = GRID_PROMPTS["flux"]
GRID_PROMPTS["wan"] = GRID_PROMPTS["hunyuan_video"]
GRID_SETTINGS = {"steps": 20, "cfg": 4.0, "sampler": "euler", "scheduler": "simple"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", required=True, choices=sorted(NAMES))
    p.add_argument("--steps", type=int, help="optimizer steps (default: the family's)")
    p.add_argument("--batch", type=int, help="batch size (default: the family's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the family's)")
    p.add_argument("--minutes", type=float, default=29.0, help="safety stop for the training loop (wall clock)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine one thread runs about 3x faster "
                        "than two, whose OpenMP barriers stall when the cores are oversubscribed)")
    p.add_argument("--out", help="output file (default: reference_models/<name>.safetensors)")
    p.add_argument("--grid", help="sample grid PNG (default: docs/images/<name>.png); 'none' to skip")
    p.add_argument("--grid-only", action="store_true", help="only draw the grid of an existing file")
    p.add_argument("--grid-seeds", type=int, default=6, help="columns of the image grids")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def attention_override():
    """Training runs attention through PyTorch's SDPA (ComfyUI's ``attention_pytorch``) via ComfyUI's
    ``optimized_attention_override`` hook: the same function as ComfyUI's CPU default (sub-quadratic
    attention), several times faster with autograd on the CPU."""
    import comfy.ldm.modules.attention as attention

    def override(func, *args, **kwargs):
        return attention.attention_pytorch(*args, **kwargs)
    return override


def draw_grid(model, spec, path: Path, seeds: int, log=log) -> dict:
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from devkit import reference_training as rt
    prompts = GRID_PROMPTS[spec.family]
    video = spec.latent.frames is not None
    cols = spec.latent.frames if video else seeds
    t0 = time.time()
    rows = []
    for r, text in enumerate(prompts):
        lat = rt.sample(model, spec, text, batch=1 if video else seeds, seed=1000 + r, **GRID_SETTINGS)
        rows.append(spec.decode(lat))             # video: (frames, H, W, 3); images: (seeds, H, W, 3)
    h, w = rows[0].shape[1:3]
    scale = max(1, 128 // max(h, w))
    tile_h, tile_w, gap, label_w, top = h * scale, w * scale, 4, 160, 26
    width = label_w + cols * (tile_w + gap)
    height = top + len(prompts) * (tile_h + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    header = (f"{spec.name}: {'frames 0-%d of one sample per row' % (cols - 1) if video else 'seeds per row'}; "
              f"{GRID_SETTINGS['sampler']}/{GRID_SETTINGS['scheduler']}, {GRID_SETTINGS['steps']} steps, "
              f"CFG {GRID_SETTINGS['cfg']}")
    draw.text((6, 6), header, fill=(0, 0, 0), font=font)
    for r, (text, imgs) in enumerate(zip(prompts, rows)):
        y = top + r * (tile_h + gap)
        draw.text((6, y + tile_h // 2 - 6), text, fill=(0, 0, 0), font=font)
        for c in range(cols):
            arr = (imgs[c].numpy() * 255).round().clip(0, 255).astype("uint8")
            tile = Image.fromarray(arr).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (tile_w + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    log(f"grid: {path} ({len(prompts)} x {cols}, {time.time() - t0:.0f}s)")
    return {"prompts": prompts, **GRID_SETTINGS, "columns": cols, "video": video}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    from devkit import reference_training as rt
    from devkit.comfy_env import comfyui_version, pack_module
    from devkit.oop_blocks import check_equal, training_transformer_options
    loader = pack_module("nodes.reference.loader")

    name = NAMES[args.family]
    out = Path(args.out) if args.out else loader.REFERENCE_DIR / f"{name}.safetensors"
    grid = None if args.grid == "none" else Path(args.grid) if args.grid else REPO / "docs" / "images" / f"{name}.png"

    if args.grid_only:
        model, spec = loader.load_reference_model(out)
        if grid is not None:
            draw_grid(model, spec, grid, args.grid_seeds)
        return 0

    spec = rt.make_spec(args.family, name)
    defaults = rt.TRAIN_DEFAULTS[args.family]
    cfg = rt.TrainConfig(family=args.family, steps=args.steps or defaults["steps"], batch=args.batch or defaults["batch"],
                         lr=args.lr or defaults["lr"], warmup=defaults.get("warmup", 100), seed=args.seed,
                         max_minutes=args.minutes, sigma_unshifted=defaults.get("sigma_unshifted", 0.0))
    model = loader.build_model(spec, None, load_device=rt.CPU, offload_device=rt.CPU)
    base = model.model
    dm = base.diffusion_model
    rt.init_weights(dm, args.seed, args.family)
    if spec.embedder is not None:
        rt.init_embedder(spec.embedder, args.seed)
    n_params = sum(p.numel() for p in dm.parameters())
    n_cond = sum(p.numel() for p in spec.embedder.parameters()) if spec.embedder is not None else 0
    log(f"{name}: {spec.model_class} {json.dumps(spec.unet_config)}")
    log(f"diffusion model {n_params / 1e6:.3f} M parameters, conditioning tables {n_cond / 1e3:.1f} k; "
        f"latent {tuple(spec.empty_latent(1)['samples'].shape[1:])}; train {cfg}")

    to = {}
    if args.family in OUT_OF_PLACE:
        # checked on a copy with random weights (the initialised model's zero gates would make every block
        # return its input unchanged on either path)
        from devkit.tiny_models import init_weights as random_weights
        probe = loader.build_model(spec, None, load_device=rt.CPU, offload_device=rt.CPU).model
        random_weights(probe.diffusion_model, args.seed + 3)
        g = torch.Generator().manual_seed(args.seed + 7)
        x = torch.randn((2,) + tuple(spec.empty_latent(1)["samples"].shape[1:]), generator=g)
        tokens = torch.tensor([spec.tokenize(spec.prompts["examples"][0]), spec.tokenize("")])
        with torch.no_grad():
            kwargs = rt.model_kwargs(spec, spec.embedder, {"tokens": tokens}, probe, x)
        diffs = check_equal(probe, x, torch.tensor([0.8, 0.3]), kwargs, seed=args.seed)
        del probe
        log(f"out-of-place training path equals ComfyUI's blocks (max abs diff {max(diffs.values()):.2e}): {diffs}")
        to = training_transformer_options(dm)
    to["optimized_attention_override"] = attention_override()

    ema, stats, val = rt.train(spec, model, cfg, to, log=log)
    log(f"training done: {stats['steps']} steps in {stats['seconds'] / 60:.1f} min ({stats['cpu_seconds'] / 60:.1f} "
        f"min of CPU time), final train loss "
        f"{stats['final_train_loss']:.4f}, validation loss (raw weights) {stats['val_loss_raw']:.4f}")

    # store the EMA weights (float16) and evaluate exactly what is stored
    spec.embedder = ema.embedder if spec.embedder is not None else None
    spec.training = dict(spec.training, script="scripts/train_reference_models.py", family=args.family, seed=args.seed,
                         threads=args.threads, steps=stats["steps"], planned_steps=stats["planned_steps"],
                         stopped_early=stats["stopped_early"], batch=cfg.batch, lr=cfg.lr, warmup=cfg.warmup,
                         ema=cfg.ema, cond_dropout=cfg.cond_dropout, word_dropout=cfg.word_dropout,
                         sigma_unshifted=cfg.sigma_unshifted,
                         minutes=round(stats["seconds"] / 60, 2), cpu_minutes=round(stats["cpu_seconds"] / 60, 2),
                         final_train_loss=stats["final_train_loss"],
                         val_loss_raw=stats["val_loss_raw"], loss_history=stats["loss_history"][::4],
                         objective="flow velocity MSE" if rt.is_flow(base) else "eps MSE",
                         torch=torch.__version__, comfyui=comfyui_version())
    size = loader.save_reference_file(out, spec, ema.diffusion_model.state_dict())
    loaded, loaded_spec = loader.load_reference_model(out)
    val_ema = rt.evaluate(loaded_spec, loaded.model, loaded_spec.embedder, val)
    spec.training["val_loss_stored"] = round(val_ema, 5)
    size = loader.save_reference_file(out, spec, ema.diffusion_model.state_dict())
    log(f"wrote {out} ({size / 1e6:.2f} MB); validation loss of the stored float16 EMA weights {val_ema:.4f}")
    if grid is not None:
        loaded, loaded_spec = loader.load_reference_model(out)
        draw_grid(loaded, loaded_spec, grid, args.grid_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
