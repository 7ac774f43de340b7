"""Training the ClusCa reference models (see ``scripts/train_reference_models.py`` and
``docs/reference_models.md``): family configurations, prompts drawn with the data, weight init, the loss in
ComfyUI's own parameterisation (through ``BaseModel.apply_model``), EMA, and the sampling helpers used for
the documentation grids.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time

import torch

from .comfy_env import load_pack, pack_module
from . import shapes
from .tiny_models import CPU, sample as sample_latent, with_version_fields  # noqa: F401  (bootstraps ComfyUI)
from .oop_blocks import training_mode  # noqa: E402  (imports comfy)

load_pack()

import comfy.model_sampling  # noqa: E402
import comfy.samplers  # noqa: E402



def _ref(name):
    return pack_module("nodes.reference." + name)


# -- family configurations --------------------------------------------------------------------------

def _axes(hidden, heads):
    """RoPE axes (index/time, rows, columns) in FLUX's / HunyuanVideo's proportions (16, 56, 56 of 128)."""
    head_dim = hidden // heads
    a = max(2, (head_dim * 3 // 8) // 2 * 2)
    return [head_dim - 2 * a, a, a]


@dataclasses.dataclass
class TrainConfig:
    family: str
    steps: int
    batch: int
    lr: float
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    ema: float = 0.998
    grad_clip: float = 1.0
    cond_dropout: float = 0.10      # whole prompt -> empty (the unconditional input of CFG)
    sigma_unshifted: float = 0.0    # flow models: share of noise levels drawn without the model's time shift
    word_dropout: float = 0.10      # each attribute word group dropped independently
    seed: int = 0
    max_minutes: float = 29.0       # safety stop; the run normally ends at ``steps``
    log_every: int = 25


def flux_family(hidden=96, heads=3, depth=2, single=2, mlp_ratio=4.0, context_dim=64, pooled_dim=64):
    unet = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=pooled_dim, context_in_dim=context_dim,
                hidden_size=hidden, mlp_ratio=mlp_ratio, num_heads=heads, depth=depth, depth_single_blocks=single,
                axes_dim=_axes(hidden, heads), theta=256, patch_size=2, qkv_bias=True, guidance_embed=False)
    with_version_fields(unet)
    vocab = [_ref("spec").PAD] + list(shapes.COLOURS) + list(shapes.SHAPES)
    return dict(family="flux", model_class="FluxSchnell", unet_config=unet,
                latent=dict(height=64, width=64, factor=2, channels=16, frames=None),
                vocabulary=vocab, text_len=4, context_dim=context_dim, pooled_dim=pooled_dim,
                prompts=dict(grammar="[colour] [shape], either word may be left out",
                             colours=list(shapes.COLOURS), shapes=list(shapes.SHAPES),
                             examples=["red circle", "blue square", "yellow triangle", "green ring", "magenta", "ring"]))


def hunyuan_video_family(hidden=96, heads=3, depth=2, single=2, mlp_ratio=4.0, context_dim=64, pooled_dim=64,
                         frames=8):
    unet = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=pooled_dim,
                context_in_dim=context_dim, hidden_size=hidden, mlp_ratio=mlp_ratio, num_heads=heads, depth=depth,
                depth_single_blocks=single, axes_dim=_axes(hidden, heads), theta=256, patch_size=[1, 2, 2],
                qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False)
    with_version_fields(unet)
    vocab = [_ref("spec").PAD] + list(shapes.COLOURS) + list(shapes.SHAPES) + ["moving"] + list(shapes.DIRECTIONS)
    return dict(family="hunyuan_video", model_class="HunyuanVideo", unet_config=unet,
                latent=dict(height=32, width=32, factor=2, channels=16, frames=frames),
                vocabulary=vocab, text_len=4, context_dim=context_dim, pooled_dim=pooled_dim, shape_size=(0.17, 0.26),
                prompts=dict(grammar="[colour] [shape] [moving direction], any part may be left out",
                             colours=list(shapes.COLOURS), shapes=list(shapes.SHAPES),
                             directions=list(shapes.DIRECTIONS),
                             examples=["red circle moving left", "blue square moving up",
                                       "yellow triangle moving right", "green ring moving down"]))


def dit_family(hidden=128, heads=4, depth=6, mlp_ratio=4.0):
    config = pack_module("nodes.dit.config")
    classes = [f"{c} {s}" for s in shapes.SHAPES for c in shapes.COLOURS]
    unet = config.make_unet_config(input_size=32, patch_size=2, in_channels=4, hidden_size=hidden, depth=depth,
                                   num_heads=heads, mlp_ratio=mlp_ratio, num_classes=len(classes), learn_sigma=False)
    vocab = [_ref("spec").PAD] + list(shapes.COLOURS) + list(shapes.SHAPES)
    return dict(family="dit", model_class="DiT", unet_config=unet,
                latent=dict(height=32, width=32, factor=1, channels=4, frames=None),
                vocabulary=vocab, text_len=2, classes=classes, shape_size=(0.18, 0.34),
                prompts=dict(grammar="[colour] [shape] (one of the classes; empty = unconditional)",
                             colours=list(shapes.COLOURS), shapes=list(shapes.SHAPES),
                             examples=["red circle", "blue square", "yellow triangle", "green ring"]))


def _text_vocab(video=False):
    vocab = [_ref("spec").PAD] + list(shapes.COLOURS) + list(shapes.SHAPES)
    return vocab + ["moving"] + list(shapes.DIRECTIONS) if video else vocab


def _image_prompts():
    return dict(grammar="[colour] [shape], either word may be left out",
                colours=list(shapes.COLOURS), shapes=list(shapes.SHAPES),
                examples=["red circle", "blue square", "yellow triangle", "green ring", "magenta", "ring"])


def qwen_image_family(hidden=96, heads=3, depth=4, context_dim=64):
    """Qwen-Image (``comfy.supported_models.QwenImage``): double-stream blocks only, 16-channel Wan 2.1 latents
    with a frame axis, patch 2, no pooled vector (the text goes through the model's RMS norm and ``txt_in``)."""
    head = hidden // heads
    rows = (3 * head // 8) // 2 * 2          # RoPE axes (frame/reference index, rows, columns), each even
    unet = dict(image_model="qwen_image", patch_size=2, in_channels=16 * 4, out_channels=16, num_layers=depth,
                attention_head_dim=head, num_attention_heads=heads, joint_attention_dim=context_dim,
                axes_dims_rope=[head - 2 * rows, rows, rows])
    with_version_fields(unet)
    return dict(family="qwen_image", model_class="QwenImage", unet_config=unet,
                latent=dict(height=64, width=64, factor=2, channels=16, frames=None),
                vocabulary=_text_vocab(), text_len=4, context_dim=context_dim, pooled_dim=0, prompts=_image_prompts())


def flux2_family(hidden=192, heads=4, depth=2, single=2, mlp_ratio=3.0, context_dim=64):
    """FLUX.2 Klein-shaped (``comfy.supported_models.Flux2``): global modulation, SiLU-gated MLPs, no biases,
    four RoPE axes, no guidance embedding, no pooled vector, patch 1 on 128-channel latents. ComfyUI pads the
    text to 512 tokens in ``model_base.Flux2.extra_conds``; training goes through the same function.

    The hidden size must exceed the 128 latent channels: the velocity in the 80 channels the pixels leave at
    zero is the noise itself, which the model can only return by carrying x_t through its residual stream. A
    first run at hidden 96 plateaued at loss 0.32 (about the 32 of 128 channels it had no room for)."""
    head = hidden // heads
    unet = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=context_dim,
                hidden_size=hidden, mlp_ratio=mlp_ratio, num_heads=heads, depth=depth, depth_single_blocks=single,
                axes_dim=[head // 4] * 4, theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False,
                global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                ref_index_scale=10.0)
    with_version_fields(unet)
    return dict(family="flux2", model_class="Flux2", unet_config=unet,
                latent=dict(height=64, width=64, factor=4, channels=128, frames=None),
                vocabulary=_text_vocab(), text_len=4, context_dim=context_dim, pooled_dim=0, prompts=_image_prompts())


def wan_family(hidden=96, heads=3, depth=4, ffn_ratio=4, context_dim=64, frames=8):
    """Wan 2.1 T2V (``comfy.supported_models.WAN21_T2V``): one stream of video tokens per block (self-attention,
    ungated cross-attention to the text, FFN), 16-channel latents, patch 1x2x2, on the videos of the
    HunyuanVideo reference model."""
    unet = dict(image_model="wan2.1", model_type="t2v", patch_size=[1, 2, 2], text_len=512, in_dim=16, dim=hidden,
                ffn_dim=hidden * ffn_ratio, freq_dim=256, text_dim=context_dim, out_dim=16, num_heads=heads,
                num_layers=depth, window_size=[-1, -1], qk_norm=True, cross_attn_norm=True, eps=1e-6)
    with_version_fields(unet)
    return dict(family="wan", model_class="WAN21_T2V", unet_config=unet,
                latent=dict(height=32, width=32, factor=2, channels=16, frames=frames),
                vocabulary=_text_vocab(video=True), text_len=4, context_dim=context_dim, pooled_dim=0,
                shape_size=(0.17, 0.26),
                prompts=dict(grammar="[colour] [shape] [moving direction], any part may be left out",
                             colours=list(shapes.COLOURS), shapes=list(shapes.SHAPES),
                             directions=list(shapes.DIRECTIONS),
                             examples=["red circle moving left", "blue square moving up",
                                       "yellow triangle moving right", "green ring moving down"]))


DEFAULT_SHAPE_SIZE = (0.12, 0.30)
FAMILIES = {"flux": flux_family, "hunyuan_video": hunyuan_video_family, "dit": dit_family,
            "qwen_image": qwen_image_family, "flux2": flux2_family, "wan": wan_family}

TRAIN_DEFAULTS = {
    "flux": dict(steps=2500, batch=8, lr=1.2e-3, warmup=50),
    "hunyuan_video": dict(steps=2000, batch=4, lr=1.2e-3, warmup=50, sigma_unshifted=0.3),
    "dit": dict(steps=2500, batch=8, lr=1.2e-3, warmup=50),
    "qwen_image": dict(steps=2500, batch=8, lr=1.2e-3, warmup=50, sigma_unshifted=0.2),
    # 512 + 256 tokens per sample (the text padded as ComfyUI pads it), hidden 192: ~0.9 s a step on one thread
    "flux2": dict(steps=1300, batch=4, lr=1.2e-3, warmup=50, sigma_unshifted=0.3),
    "wan": dict(steps=2000, batch=4, lr=1.2e-3, warmup=50, sigma_unshifted=0.3),
}

#: families whose conditioning reaches ``apply_model`` in training through the model's own ``extra_conds``
#: (what the sampler does with a CONDITIONING), so that training sees the inputs sampling will give it
SAMPLER_CONDS = ("qwen_image", "flux2", "wan")


def make_spec(family: str, name: str, **arch):
    spec_mod = _ref("spec")
    d = FAMILIES[family](**arch)
    spec = spec_mod.ReferenceSpec(name=name, family=d["family"], model_class=d["model_class"],
                                  unet_config=d["unet_config"], latent=spec_mod.PixelLatent(**d["latent"]),
                                  vocabulary=d["vocabulary"], text_len=d["text_len"],
                                  context_dim=d.get("context_dim", 0), pooled_dim=d.get("pooled_dim", 0),
                                  classes=d.get("classes"), prompts=d["prompts"])
    spec.training = {"data": {"shape_size": list(d.get("shape_size") or DEFAULT_SHAPE_SIZE)}}
    spec.embedder = spec.make_embedder()
    return spec


# -- weights ----------------------------------------------------------------------------------------

ZERO_INIT = ("img_mod.lin", "txt_mod.lin", "modulation.lin", "final_layer.linear", "final_layer.adaLN_modulation",
             "adaLN_modulation")
#: further adaLN-Zero parameters (regular expressions: modulation producers and the final projection) of the
#: families whose modules are named otherwise: Qwen-Image's ``img_mod`` / ``txt_mod`` are (SiLU, Linear)
#: sequences and its output layer is ``norm_out`` / ``proj_out``; Wan's block and head modulations are
#: parameters added to the ``time_projection`` output, its final projection is ``head.head``
ZERO_INIT_EXTRA = {
    "qwen_image": (r"\.(img|txt)_mod\.1\.", r"^norm_out\.linear\.", r"^proj_out\."),
    "flux2": (r"^double_stream_modulation_(img|txt)\.lin\.",),
    "wan": (r"^time_projection\.1\.", r"^blocks\.\d+\.modulation$", r"^head\.head\.", r"^head\.modulation$"),
}
#: families initialised with every norm layer's gain at 1 (and bias 0), whatever the parameter is called
#: (ComfyUI's ``RMSNorm`` / affine ``LayerNorm`` call it ``weight``, which would otherwise be zeroed)
UNIT_NORMS = ("qwen_image", "flux2", "wan")


def _zero_init(name: str, family) -> bool:
    return any(z in name for z in ZERO_INIT) or any(re.search(r, name) for r in ZERO_INIT_EXTRA.get(family, ()))


def init_weights(module: torch.nn.Module, seed: int, family: str | None = None) -> None:
    """DiT-style init (comfy.ops leaves weights uninitialised): xavier-uniform matrices, zero biases, unit
    norm scales, normal(0, 0.02) embeddings and adaLN-Zero (modulations and the final projection start at 0).
    ``family`` adds that family's adaLN-Zero names (``ZERO_INIT_EXTRA``) and unit norm gains (``UNIT_NORMS``)."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    if family in UNIT_NORMS:
        for mname, m in module.named_modules():
            if "Norm" in type(m).__name__:
                norm_params.update(f"{mname}.{n}" if mname else n for n, _ in m.named_parameters(recurse=False))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in norm_params:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
            elif _zero_init(name, family):
                p.zero_()
            elif name.endswith("scale") and p.ndim == 1:
                p.fill_(1.0)
            elif "embedding_table" in name or name.endswith("y_embedder.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif "t_embedder" in name and p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif p.ndim >= 2:
                fan_out, fan_in = p.shape[0], p[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            else:
                p.zero_()


def init_embedder(embedder, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        embedder.token.weight.copy_(torch.randn(embedder.token.weight.shape, generator=g))
        embedder.position.copy_(torch.randn(embedder.position.shape, generator=g) * 0.1)
        if embedder.pooled is not None:
            embedder.pooled.weight.copy_(torch.randn(embedder.pooled.weight.shape, generator=g))


# -- data and prompts -------------------------------------------------------------------------------

def draw_batch(spec, cfg: TrainConfig, g: torch.Generator):
    """(x0 in model space, conditioning kwargs for apply_model (tensors that need the embedder are token ids))."""
    lat = spec.latent
    n = cfg.batch
    r_range = tuple(spec.training.get("data", {}).get("shape_size", DEFAULT_SHAPE_SIZE))
    if lat.frames is not None:
        pix, kind, colour, direction = shapes.sample_videos(n, lat.height, lat.frames, g, r_range=r_range)
    else:
        pix, kind, colour = shapes.sample_images(n, lat.height, g, r_range=r_range)
        direction = None
    x0 = spec.to_model_space(pix * 2 - 1)
    drop_all = torch.rand(n, generator=g) < cfg.cond_dropout
    drop = torch.rand(n, 3, generator=g) < cfg.word_dropout
    if spec.family == "dit":
        labels = kind * len(shapes.COLOURS) + colour
        labels = torch.where(drop_all, torch.full_like(labels, len(spec.classes)), labels)
        return x0, {"labels": labels}
    index = {w: i for i, w in enumerate(spec.vocabulary)}
    pad = index[_ref("spec").PAD]
    colours, kinds, dirs = list(shapes.COLOURS), list(shapes.SHAPES), list(shapes.DIRECTIONS)
    tokens = torch.full((n, spec.text_len), pad, dtype=torch.long)
    for i in range(n):
        if drop_all[i]:
            continue
        words = []
        if not drop[i, 0]:
            words.append(colours[colour[i]])
        if not drop[i, 1]:
            words.append(kinds[kind[i]])
        if direction is not None and not drop[i, 2]:
            words += ["moving", dirs[direction[i]]]
        tokens[i, : len(words)] = torch.tensor([index[w] for w in words], dtype=torch.long)
    return x0, {"tokens": tokens}


def sampler_conds(base_model, x: torch.Tensor, context: torch.Tensor, pooled=None) -> dict:
    """``apply_model``'s keyword arguments for a text conditioning as ComfyUI's sampler makes them from a
    CONDITIONING: the model's own ``extra_conds`` (``comfy.samplers.encode_model_conds``: FLUX.2 pads the text
    to 512 tokens there) and every cond's ``process_cond`` for the batch. Differentiable in ``context``."""
    conds = base_model.extra_conds(cross_attn=context, pooled_output=pooled, device=x.device, noise=x)
    return {k: c.process_cond(batch_size=x.shape[0], device=x.device).cond for k, c in conds.items()}


def model_kwargs(spec, embedder, cond: dict, base_model=None, x=None) -> dict:
    """``apply_model``'s conditioning keyword arguments for a batch; the ``SAMPLER_CONDS`` families need the
    model and the (noisy) latent, whose shape and device ``extra_conds`` reads."""
    if spec.family == "dit":
        return {"y": cond["labels"]}
    context, pooled = embedder(cond["tokens"])
    if spec.family in SAMPLER_CONDS:
        return sampler_conds(base_model, x, context, pooled)
    return {"c_crossattn": context, "y": pooled}


# -- noise levels and loss --------------------------------------------------------------------------

def is_flow(base_model) -> bool:
    return isinstance(base_model.model_sampling, comfy.model_sampling.CONST)


def draw_sigmas(base_model, n: int, g: torch.Generator, unshifted: float = 0.0) -> torch.Tensor:
    """Flow models: u from a logit-normal(0, 1) (80 %) or uniform (20 %) in [1e-3, 1], mapped through the
    model's own time shift (``model_sampling.sigma``), so training sees noise levels where ComfyUI's
    schedules put them; a share ``unshifted`` of them is used as sigma directly (more low noise levels for
    models with a strong shift, whose last sampling steps jump from there to 0). EPS models: one of the
    model's 1000 discrete sigmas, uniformly."""
    ms = base_model.model_sampling
    if is_flow(base_model):
        u = torch.sigmoid(torch.randn(n, generator=g))
        uni = torch.rand(n, generator=g)
        u = torch.where(torch.rand(n, generator=g) < 0.2, uni, u).clamp(1e-3, 1.0)
        sigma = ms.sigma(ms.timestep(u)).float()
        if unshifted > 0:
            sigma = torch.where(torch.rand(n, generator=g) < unshifted, u.float(), sigma)
        return sigma
    idx = torch.randint(0, len(ms.sigmas), (n,), generator=g)
    return ms.sigmas[idx].float()


def noisy(base_model, x0, noise, sigma):
    """x_t as ComfyUI's samplers form it: flow sigma*noise + (1-sigma)*x0; EPS x0 + sigma*noise."""
    return base_model.model_sampling.noise_scaling(sigma, noise, x0)


def prediction_loss(base_model, x0, noise, sigma, kwargs, transformer_options=None, per_sample=False):
    """Flow: MSE between the velocity the model implies, (x_t - denoised) / sigma, and noise - x0. EPS: MSE
    between the implied eps, (x_t - denoised) / sigma, and the noise. ``denoised`` is ``apply_model``'s output."""
    x_t = noisy(base_model, x0, noise, sigma)
    to = transformer_options if transformer_options is not None else {}
    denoised = base_model.apply_model(x_t, sigma, transformer_options=to, **kwargs)
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    pred = (x_t - denoised) / s
    target = noise - x0 if is_flow(base_model) else noise
    err = (pred - target).square()
    return err.flatten(1).mean(1) if per_sample else err.mean()


# -- training loop ----------------------------------------------------------------------------------

def lr_at(step, cfg: TrainConfig):
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class Trainable(torch.nn.Module):
    """The diffusion model and the conditioning tables, trained together."""

    def __init__(self, diffusion_model, embedder):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.embedder = embedder if embedder is not None else torch.nn.Module()


def validation_batch(spec, base_model, seed=12345, n=32):
    cfg = TrainConfig(family=spec.family, steps=1, batch=n, lr=0, cond_dropout=0.1, word_dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    x0, cond = draw_batch(spec, cfg, g)
    noise = torch.randn(x0.shape, generator=g)
    # a fixed draw of noise levels from the training distribution, sorted
    gs = torch.Generator().manual_seed(seed + 1)
    sigma = draw_sigmas(base_model, n, gs).sort().values
    return x0, cond, noise, sigma


def evaluate(spec, base_model, embedder, batch, transformer_options=None) -> float:
    x0, cond, noise, sigma = batch
    with torch.no_grad():
        return float(prediction_loss(base_model, x0, noise, sigma, model_kwargs(spec, embedder, cond, base_model, x0),
                                     transformer_options))


def train(spec, model_patcher, cfg: TrainConfig, transformer_options=None, log=print):
    """Train in place; returns (EMA copy of Trainable, stats dict)."""
    base = model_patcher.model
    dm = base.diffusion_model
    trainable = Trainable(dm, spec.embedder)
    trainable.requires_grad_(True).train()
    ema = copy.deepcopy(trainable).requires_grad_(False).eval()
    params = [p for p in trainable.parameters() if p.requires_grad]
    decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
    g = torch.Generator().manual_seed(cfg.seed)
    val = validation_batch(spec, base)
    history, recent = [], []
    t0, c0 = time.time(), time.process_time()
    step = 0
    stopped_early = False
    for step in range(cfg.steps):
        if (time.time() - t0) / 60 > cfg.max_minutes:
            stopped_early = True
            log(f"time budget of {cfg.max_minutes} min reached at step {step}; stopping")
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x0, cond = draw_batch(spec, cfg, g)
        noise = torch.randn(x0.shape, generator=g)
        sigma = draw_sigmas(base, cfg.batch, g, cfg.sigma_unshifted)
        with training_mode():
            loss = prediction_loss(base, x0, noise, sigma, model_kwargs(spec, trainable.embedder, cond, base, x0),
                                   transformer_options)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        d = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pt in zip(ema.parameters(), trainable.parameters()):
                pe.lerp_(pt.detach(), 1 - d)
        recent.append(float(loss.detach()))
        if (step + 1) % cfg.log_every == 0 or step == 0:
            mean = sum(recent) / len(recent)
            history.append((step + 1, mean))
            log(f"step {step + 1:5d}/{cfg.steps}  loss {mean:.4f}  grad {float(gnorm):.3f}  lr {lr_at(step, cfg):.2e}  "
                f"{time.time() - t0:7.1f}s")
            recent = []
    steps_done = step + 1 if not stopped_early else step
    elapsed, cpu = time.time() - t0, time.process_time() - c0
    last = [l for s, l in history if s > steps_done - 100] or [history[-1][1]]
    stats = dict(steps=steps_done, planned_steps=cfg.steps, stopped_early=stopped_early, seconds=round(elapsed, 1),
                 cpu_seconds=round(cpu, 1),
                 final_train_loss=round(sum(last) / len(last), 5), loss_history=[(s, round(l, 5)) for s, l in history])
    trainable.requires_grad_(False).eval()
    stats["val_loss_raw"] = round(evaluate(spec, base, trainable.embedder, val, transformer_options), 5)
    return ema, stats, val


# -- sampling ---------------------------------------------------------------------------------------

def sample(model, spec, text, batch=1, steps=20, cfg=4.0, seed=0, sampler="euler", scheduler="simple", frames=None,
           negative=""):
    """``batch`` samples of one prompt in one sampler call through ComfyUI's KSampler path
    (``devkit.tiny_models.sample``: ``comfy.sample.prepare_noise`` + ``comfy.sample.sample``).
    Returns the LATENT samples (B, ...) as the sampler gives them (outer latent space)."""
    pos, neg = spec.conditioning(text, negative=negative)
    latent = spec.empty_latent(batch, frames=frames)["samples"]
    return sample_latent(model, pos, neg, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler, latent=latent,
                         seed=seed)
