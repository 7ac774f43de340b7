"""The ComfyUI contract: every ComfyUI symbol, signature, dict key and block attribute the pack relies on, as
data, one test per entry.

When a ComfyUI release breaks the pack, the failing entries say in one line each what changed (a missing
symbol, a renamed parameter, a key the sampler no longer provides, a block attribute that moved) and what the
pack uses it for. Entries are checked against the real ComfyUI tree in use (``COMFYUI=0.3.75`` or
``COMFYUI=0.33.0``); the keys and attributes that only exist at run time are recorded from real tiny models
sampled through ``comfy.sample`` (see the probes below), not read from ComfyUI's source.

How to extend it
- A ComfyUI symbol the pack starts to use: add a ``symbol(...)``, ``params(...)`` (how many arguments the pack
  passes by position, which by name, and which parameters it interprets by position) or ``fields(...)`` line to
  ``CORE`` / ``SAMPLER`` / ``DIT`` (the section of the code that uses it), with a short ``why``.
- A new model family (FLUX.2, Chroma, Qwen-Image, Wan, LTX-2, Lumina / Z-Image...): add a :class:`Family` to
  ``FAMILIES`` with its tiny model and conditioning (devkit), the ``_forward`` parameters its adapter reads,
  the model attributes it reads, and a :class:`BlockSpec` per patched block kind (the ``patches_replace["dit"]``
  args / extra keys the adapter reads, the keys its patch returns, the block attributes it uses, the branch
  submodules whose outputs it captures, and behavioural checks such as the modulation's fields). The entries
  are generated from it, and the probe run records what a real model of the family passes.
- Anything else the pack reads at run time: an ``observed(...)`` entry with a probe that records it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch

from devkit.comfy_env import COMFY_DIR, comfyui_version, load_pack, pack_module
from devkit.tiny_dit import dit_cond, null_cond, tiny_dit
from devkit.tiny_models import flux_cond, hunyuan_video_cond, sample, tiny_flux, tiny_hunyuan_video
from devkit.tiny_wan import tiny_wan, wan_cond
from devkit.tiny_ltx import ltx_cond, tiny_ltxv

load_pack()

import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.patcher_extension  # noqa: E402


class ContractBroken(AssertionError):
    """What changed, in one line (the test adds the entry's name and what the pack needs it for)."""


@dataclass(frozen=True)
class Entry:
    name: str                   # the symbol / key / attribute, as a reader searches for it
    why: str                    # what the pack uses it for
    check: Callable[[], None]   # raises ContractBroken (or pytest.skip where it does not apply)


# -- the kinds of check --------------------------------------------------------------------------------

def _resolve(path: str):
    """``"module:Attr.attr"`` -> the object; ContractBroken naming the first part that is missing."""
    module_name, _, attrs = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ContractBroken(f"module {module_name} cannot be imported ({type(exc).__name__}: {exc})") from exc
    done = module_name
    for part in attrs.split(".") if attrs else ():
        if not hasattr(obj, part):
            near = sorted(n for n in dir(obj) if not n.startswith("__"))
            raise ContractBroken(f"{done} has no attribute {part!r} (it has: {', '.join(near[:40])})")
        obj = getattr(obj, part)
        done += "." + part
    return obj


def _dotted(path: str) -> str:
    return path.replace(":", ".")


def symbol(path: str, why: str, kind: Optional[str] = None) -> Entry:
    """A module attribute exists (``kind``: "callable" or "class" also checks what it is)."""
    def check():
        obj = _resolve(path)
        if kind == "callable" and not callable(obj):
            raise ContractBroken(f"{_dotted(path)} is no longer callable (it is a {type(obj).__name__})")
        if kind == "class" and not inspect.isclass(obj):
            raise ContractBroken(f"{_dotted(path)} is no longer a class (it is a {type(obj).__name__})")
    return Entry(_dotted(path), why, check)


def _signature(obj, what: str) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError) as exc:
        raise ContractBroken(f"{what} has no readable signature ({exc})") from exc


def params(path: str, why: str, positional: int = 0, keywords=(), order=()) -> Entry:
    """How the pack calls a ComfyUI callable: ``positional`` arguments by position (their names do not matter),
    ``keywords`` by name, and ``order``: parameters the pack interprets by position, so their names and order
    matter (they come first, after ``self``)."""
    keywords, order = list(keywords), list(order)

    def check():
        sig = _signature(_resolve(path), _dotted(path))
        plist = list(sig.parameters.values())
        if plist and plist[0].name == "self":
            plist = plist[1:]
        kinds = inspect.Parameter
        if order:
            have = [q.name for q in plist[:len(order)]]
            expect(have == order, f"{_dotted(path)} starts with parameters {have}, not {order} (signature {sig})")
        if positional:
            takes = sum(q.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD) for q in plist)
            varargs = any(q.kind == kinds.VAR_POSITIONAL for q in plist)
            expect(varargs or takes >= positional,
                   f"{_dotted(path)} takes {takes} positional arguments; the pack passes {positional} (signature {sig})")
        names = {q.name for q in plist if q.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
        missing = [n for n in keywords if n not in names]
        expect(not missing, f"{_dotted(path)} has no parameter {', '.join(map(repr, missing))} (signature {sig})")
    parts = order + ([f"{positional} positional"] if positional else []) + [f"{k}=" for k in keywords]
    return Entry(f"{_dotted(path)}({', '.join(parts)})", why, check)


def fields(path: str, names, why: str) -> Entry:
    """A dataclass / NamedTuple class has these fields."""
    names = list(names)

    def check():
        cls = _resolve(path)
        if dataclasses.is_dataclass(cls):
            have = [f.name for f in dataclasses.fields(cls)]
        elif hasattr(cls, "_fields"):
            have = list(cls._fields)
        else:
            raise ContractBroken(f"{_dotted(path)} is no longer a dataclass or NamedTuple")
        missing = [n for n in names if n not in have]
        if missing:
            raise ContractBroken(f"{_dotted(path)} has no field {', '.join(map(repr, missing))} (fields: {have})")
    return Entry(f"{_dotted(path)} fields {', '.join(names)}", why, check)


def observed(name: str, why: str, check: Callable[[], None]) -> Entry:
    """Anything recorded from a real run (see the probes): ``check`` raises ContractBroken."""
    return Entry(name, why, check)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractBroken(message)


def _attr_path(obj, path: str, owner: str):
    """``obj.a.b`` for ``path`` "a.b"; ContractBroken naming the missing part and the submodules there are."""
    done = owner
    for part in path.split("."):
        if not hasattr(obj, part):
            children = [n for n, _ in obj.named_children()] if isinstance(obj, torch.nn.Module) else []
            more = f" (its submodules: {', '.join(children)})" if children else ""
            raise ContractBroken(f"{done} has no attribute {part!r}{more}")
        obj = getattr(obj, part)
        done += "." + part
    return obj


# -- probes: what real ComfyUI passes to the pack's hooks -------------------------------------------------

#: the keys the pack adds to ``transformer_options`` in the OUTER_SAMPLE wrapper must reach every model call
MARKER = "clusca_contract_marker"


def _bind(dm, args: tuple, kwargs: dict) -> dict:
    """The DIFFUSION_MODEL wrapper's arguments by name, from the model's own ``_forward`` signature (how the
    pack names them)."""
    fn = getattr(type(dm), "_forward", None) or type(dm).forward
    bound = inspect.signature(fn).bind(dm, *args, **kwargs)
    out = dict(bound.arguments)
    out.pop("self", None)
    out.update(out.pop("kwargs", None) or {})
    return out


@functools.lru_cache(maxsize=None)
def family_probe(name: str) -> dict:
    """One sampling run of the family's tiny model (cfg 2: cond and uncond) through ``comfy.sample`` with an
    OUTER_SAMPLE and a DIFFUSION_MODEL wrapper and a ``patches_replace["dit"]`` entry on every block, each
    recording what ComfyUI hands it; the block entries return only the keys the pack's patch returns."""
    fam = FAMILIES_BY_NAME[name]
    m = fam.make_model().clone()
    dm = m.model.diffusion_model
    rec = {"outer": [], "calls": [], "blocks": {k: {"args": set(), "extra": set(), "out": set(), "hooks": set(),
                                                     "indices": set()} for k in fam.blocks},
           "attention": 0, "error": None, "setup": {}}

    def outer(executor, *args, **kwargs):
        guider = executor.class_obj
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        info = {"guider": type(guider).__name__, "sigmas": sigmas, "has_model_options": hasattr(guider, "model_options")}
        try:
            info["percent_to_sigma"] = [float(guider.model_patcher.model.model_sampling.percent_to_sigma(p))
                                        for p in (0.0, 1.0)]
        except Exception as exc:  # noqa: BLE001 - recorded, the entry says what failed
            info["percent_to_sigma"] = exc
        original = guider.model_options
        try:
            guider.model_options = comfy.model_patcher.create_model_options_clone(original)
            guider.model_options.setdefault("transformer_options", {})[MARKER] = True
            info["clone_isolated"] = MARKER not in (original.get("transformer_options") or {})
        except Exception as exc:  # noqa: BLE001 - recorded, the entry says what failed
            guider.model_options = original
            info["clone_error"] = f"{type(exc).__name__}: {exc}"
        rec["outer"].append(info)
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options = original

    def diffusion(executor, *args, **kwargs):
        model = executor.class_obj
        call = {"class": type(model), "is_model": model is dm}
        try:
            bound = _bind(model, args, kwargs)
            to = bound.get("transformer_options") or {}
            call.update(bound=set(bound), x=bound.get("x"), to_keys=set(to), sigmas=to.get("sigmas"),
                        uuids=to.get("uuids"), marker=to.get(MARKER))
        except TypeError as exc:
            call["bind_error"] = exc
        rec["calls"].append(call)
        return executor(*args, **kwargs)

    def block_patch(kind, index):
        spec = fam.blocks[kind]
        block = getattr(dm, fam.block_lists[kind])[index]

        def patch(args, extra):
            r = rec["blocks"][kind]
            r["indices"].add(index)
            r["args"] |= set(args)
            r["extra"] |= set(extra)
            handles = []
            for branch in spec.branches:
                try:
                    mod = _attr_path(block, branch, kind)
                except ContractBroken:
                    continue
                handles.append(mod.register_forward_hook(lambda *_a, b=branch: r["hooks"].add(b)))
            try:
                out = extra["original_block"](args)
            finally:
                for h in handles:
                    h.remove()
            r["out"] |= set(out)
            return {k: out[k] for k in spec.returns}
        return patch

    def attention(func, *args, **kwargs):
        rec["attention"] += 1
        return func(*args, **kwargs)

    def install(what, fn):
        # each hook on its own: a renamed symbol leaves the others working (its own entries name it)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            rec["setup"][what] = f"{type(exc).__name__}: {exc}"

    def patch_blocks():
        for kind in fam.blocks:
            for i in range(len(getattr(dm, fam.block_lists[kind], ()))):
                m.set_model_patch_replace(block_patch(kind, i), "dit", kind, i)

    wrappers = comfy.patcher_extension.WrappersMP
    install("the block patches", patch_blocks)
    install("the OUTER_SAMPLE wrapper", lambda: m.add_wrapper_with_key(wrappers.OUTER_SAMPLE, "contract", outer))
    install("the DIFFUSION_MODEL wrapper",
            lambda: m.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, "contract", diffusion))
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = attention
    try:
        sample(m, fam.make_cond(1), fam.make_cond(2), steps=3, cfg=2.0, latent=torch.zeros(fam.latent))
    except Exception as exc:  # noqa: BLE001 - every entry that needs the run reports it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def _run(name: str) -> dict:
    rec = family_probe(name)
    if rec["error"]:
        raise ContractBroken(f"the {name} probe run (tiny model, comfy.sample, cfg 2) failed: {rec['error']}")
    return rec


def _installed(rec: dict, what: str) -> None:
    if what in rec["setup"]:
        raise ContractBroken(f"{what} could not be installed: {rec['setup'][what]}")


def _calls(name: str) -> list:
    rec = _run(name)
    _installed(rec, "the DIFFUSION_MODEL wrapper")
    expect(bool(rec["calls"]), "no DIFFUSION_MODEL wrapper call was seen during sampling")
    return rec["calls"]


def _outer(name: str) -> list:
    rec = _run(name)
    _installed(rec, "the OUTER_SAMPLE wrapper")
    expect(bool(rec["outer"]), "the OUTER_SAMPLE wrapper was never called")
    return rec["outer"]


def _blocks(name: str, kind: str) -> dict:
    rec = _run(name)
    _installed(rec, "the block patches")
    return rec["blocks"][kind]


@functools.lru_cache(maxsize=None)
def pre_cfg_probe() -> dict:
    """A DiT (the pack's model, ComfyUI's sampler) sampled with a sampler_pre_cfg_function that records its
    arguments and gives the negative the positive's prediction, as the pack does for DiTs without a null class."""
    seen = {}

    def pre_cfg(args):
        seen["keys"] = set(args)
        conds = args.get("conds")
        seen["negative_keys"] = set(conds[1][0]) if conds and len(conds) > 1 and conds[1] else set()
        out = list(args["conds_out"])
        out[1] = out[0]
        return out

    m = tiny_dit(0).clone()
    m.set_model_sampler_pre_cfg_function(pre_cfg)
    try:
        seen["replaced"] = sample(m, dit_cond(207), null_cond(), steps=3, cfg=4.0, channels=4)
        seen["same"] = sample(tiny_dit(0), dit_cond(207), dit_cond(207), steps=3, cfg=4.0, channels=4)
        seen["error"] = None
    except Exception as exc:  # noqa: BLE001
        seen["error"] = f"{type(exc).__name__}: {exc}"
    return seen


def _pre_cfg() -> dict:
    seen = pre_cfg_probe()
    if seen["error"]:
        raise ContractBroken(f"sampling a tiny DiT with a sampler_pre_cfg_function failed: {seen['error']}")
    expect("keys" in seen, "the sampler_pre_cfg_function was never called")
    return seen


# -- model families --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockSpec:
    """What an adapter uses of one kind of block (a ``patches_replace["dit"]`` kind)."""
    args: dict                      # keys of the patch's ``args`` the pack reads -> why
    extra: dict                     # keys of the patch's ``extra`` the pack reads -> why
    returns: tuple                  # the keys the pack's patch returns (ComfyUI must need no more)
    original_returns: dict          # keys the pack reads from ``extra["original_block"](args)`` -> why
    attrs: dict                     # attribute paths on the block -> why
    branches: dict = field(default_factory=dict)   # submodules whose outputs are captured by hooks -> why
    #: behavioural checks: name -> (fn(block, diffusion_model) raising ContractBroken, why)
    checks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str                # "module:Class", the class the adapter's probe compares with
    make_model: Callable            # a tiny ModelPatcher of the family (devkit)
    make_cond: Callable             # seed -> CONDITIONING
    latent: tuple                   # the probe run's latent shape
    forward_params: dict            # _forward parameters the adapter reads by name -> why
    model_attrs: dict               # attribute paths on the diffusion model -> why
    block_lists: dict               # block kind -> attribute of the model holding those blocks
    blocks: dict                    # block kind -> BlockSpec


def _modulation_fields(mods, what: str) -> None:
    for i, mod in enumerate(mods):
        missing = [f for f in ("shift", "scale", "gate") if not isinstance(getattr(mod, f, None), torch.Tensor)]
        expect(not missing, f"{what}[{i}] (a {type(mod).__name__}) has no tensor {', '.join(missing)}")


def _vec(dm) -> torch.Tensor:
    return torch.randn(1, dm.hidden_size)


def _double_modulation(block, dm) -> None:
    for name in ("img_mod", "txt_mod"):
        out = _attr_path(block, name, "double block")(_vec(dm))
        expect(isinstance(out, (tuple, list)) and len(out) == 2,
               f"double block.{name}(vec) returns {type(out).__name__} of length {len(out) if hasattr(out, '__len__') else '?'}, "
               "not (attention modulation, MLP modulation)")
        _modulation_fields(out, f"double block.{name}(vec)")


def _single_modulation(block, dm) -> None:
    out = _attr_path(block, "modulation", "single block")(_vec(dm))
    expect(isinstance(out, (tuple, list)) and len(out) >= 1, "single block.modulation(vec) is not a tuple")
    _modulation_fields(out[:1], "single block.modulation(vec)")


def _single_linear_layout(block, dm) -> None:
    hidden = _attr_path(block, "hidden_size", "single block")
    mlp = int(hidden * dm.params.mlp_ratio)
    out1 = _attr_path(block, "linear1.weight", "single block").shape[0]
    in2 = _attr_path(block, "linear2.weight", "single block").shape[1]
    expect(out1 == 3 * hidden + mlp, f"single block.linear1 gives {out1} features, not qkv (3 x {hidden}) + MLP ({mlp})")
    expect(in2 == hidden + mlp, f"single block.linear2 takes {in2} features, not attention ({hidden}) + MLP ({mlp})")


FLUX_STYLE_DOUBLE = BlockSpec(
    args={"img": "image stream: cached steps forecast it, the last double block clusters it",
          "txt": "text stream: forecast and clustered like the image stream",
          "vec": "modulation input: cached steps recompute the gates from it",
          "transformer_options": "carries the run's ClusCa holder to the block patch"},
    extra={"original_block": "full steps run ComfyUI's own block through it"},
    returns=("img", "txt"),
    original_returns={"img": "layout self-check and clustering", "txt": "layout self-check and clustering"},
    attrs={"modulation": "must be truthy: blocks without their own modulation (FLUX.2) are refused",
           "img_mod": "image modulation (shift, scale, gate) on cached steps",
           "txt_mod": "text modulation on cached steps",
           "img_attn.proj": "image attention output, captured on full steps",
           "txt_attn.proj": "text attention output, captured on full steps",
           "img_mlp": "image MLP: captured on full steps, run on representatives on cached steps",
           "txt_mlp": "text MLP: captured and refreshed like the image one",
           "img_norm2": "image pre-MLP norm for the representatives' refresh",
           "txt_norm2": "text pre-MLP norm for the representatives' refresh"},
    branches={"img_attn.proj": "image attention branch", "img_mlp": "image MLP branch",
              "txt_attn.proj": "text attention branch", "txt_mlp": "text MLP branch"},
    checks={"img_mod(vec) / txt_mod(vec) -> 2 ModulationOut(shift, scale, gate)":
            (_double_modulation, "cached steps apply the blocks' own gates and the MLP's shift/scale")},
)

FLUX_STYLE_SINGLE = BlockSpec(
    args={"img": "joint (text + image) stream: forecast on cached steps",
          "vec": "modulation input: cached steps recompute the gate from it",
          "transformer_options": "carries the run's ClusCa holder to the block patch"},
    extra={"original_block": "full steps run ComfyUI's own block through it"},
    returns=("img",),
    original_returns={"img": "layout self-check"},
    attrs={"linear1": "qkv + MLP input projection, for the MLP part's refresh",
           "linear2": "output projection: its output is the cached branch",
           "modulation": "shift, scale, gate on cached steps",
           "pre_norm": "pre-norm for the MLP part's refresh",
           "mlp_act": "MLP activation for the MLP part's refresh",
           "hidden_size": "splits linear1's output and linear2's input into attention and MLP parts"},
    branches={"linear2": "the block's whole update (attention + MLP through linear2)"},
    checks={"modulation(vec)[0] -> ModulationOut(shift, scale, gate)":
            (_single_modulation, "cached steps apply the block's own gate"),
            "linear1 = qkv (3 x hidden) + MLP, linear2 = attention (hidden) + MLP":
            (_single_linear_layout, "the MLP half of a single block is computed alone on representatives")},
)

def _ltx_modulation_table(block, dm) -> None:
    table = _attr_path(block, "scale_shift_table", "LTX block")
    rows = 9 if getattr(block, "cross_attention_adaln", False) else 6
    expect(tuple(table.shape) == (rows, dm.inner_dim),
           f"LTX block.scale_shift_table is {tuple(table.shape)}, not ({rows}, {dm.inner_dim}): the six (nine with "
           "the cross-attention AdaLN) modulation rows the per-token timestep embedding is added to")


LTX_BLOCK = BlockSpec(
    args={"img": "the video stream: forecast on cached steps, the last block clusters it",
          "vec": "the (per-token) timestep embedding: cached steps recompute the gates from it",
          "transformer_options": "carries the run's ClusCa holder to the block patch"},
    extra={"original_block": "full steps run ComfyUI's own block through it"},
    returns=("img",),
    original_returns={"img": "layout self-check and clustering"},
    attrs={"scale_shift_table": "the modulation rows (shift, scale, gate) added to the timestep embedding",
           "attn1": "self-attention, captured on full steps",
           "attn2": "text cross-attention, captured on full steps",
           "ff": "feed-forward: captured on full steps, run on representatives on cached steps"},
    branches={"attn1": "self-attention branch", "attn2": "text cross-attention branch", "ff": "feed-forward branch"},
    checks={"scale_shift_table = (6 or 9, inner_dim)": (_ltx_modulation_table, "cached steps apply the block's "
                                                       "own gates and the feed-forward's shift / scale")},
)

FLUX_STYLE_LISTS = {"double_block": "double_blocks", "single_block": "single_blocks"}


def _wan_modulation(block, dm) -> None:
    m = _attr_path(block, "modulation", "Wan block")
    shape = tuple(getattr(m, "shape", ()))
    expect(shape == (1, 6, dm.dim), f"Wan block.modulation has shape {shape}, not (1, 6, {dm.dim}) (added to the "
                                    "patch's vec and split into shift, scale, gate of self-attention and FFN)")


def _wan_repeat_e(block, dm) -> None:
    repeat_e = _resolve("comfy.ldm.wan.model:repeat_e")
    e, x = torch.randn(2, 3, dm.dim), torch.randn(2, 12, dm.dim)
    out = repeat_e(e, x)
    expect(tuple(out.shape) == (2, 12, dm.dim) and torch.equal(out[:, 4], e[:, 1]),
           f"repeat_e(e (2, 3, D), x (2, 12, D)) gives {tuple(out.shape)}, not each frame's value for its 4 tokens")


WAN_BLOCK = BlockSpec(
    args={"img": "the video token stream: cached steps forecast it, the last block clusters it",
          "vec": "e0, the timestep modulation (per frame for Wan 2.2 TI2V): cached steps rebuild the gates from it",
          "transformer_options": "carries the run's ClusCa holder to the block patch"},
    extra={"original_block": "full steps run ComfyUI's own block through it"},
    returns=("img",),
    original_returns={"img": "layout self-check and clustering"},
    attrs={"self_attn": "self-attention output, captured on full steps",
           "cross_attn": "(ungated) cross-attention output, captured on full steps",
           "ffn": "FFN: captured on full steps, run on representatives on cached steps",
           "norm2": "pre-FFN norm for the representatives' refresh"},
    branches={"self_attn": "self-attention branch", "cross_attn": "cross-attention branch", "ffn": "FFN branch"},
    checks={"modulation is a (1, 6, dim) parameter": (_wan_modulation, "cached steps rebuild the six modulations "
                                                                        "from it and the patch's vec"),
            "repeat_e(e per frame, x) expands to one value per token": (_wan_repeat_e, "per-frame timesteps (TI2V) "
                                                                         "become per-token modulation on cached steps")},
)

FAMILIES = [
    Family(
        name="FLUX.1",
        model_class="comfy.ldm.flux.model:Flux",
        make_model=lambda: tiny_flux(0),
        make_cond=lambda seed: flux_cond(seed),
        latent=(1, 16, 8, 8),
        forward_params={"x": "latent: batch, image tokens and fingerprint of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "ref_latents": "Kontext reference latents: counted as image tokens",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"params.axes_dim": "three RoPE axes tell FLUX.1 from FLUX.2 (four)",
                     "params.mlp_ratio": "MLP width for the FLOP estimate",
                     "patch_size": "image tokens per latent",
                     "hidden_size": "FLOP estimate",
                     "double_blocks": "the double-stream blocks patched as ('double_block', i)",
                     "single_blocks": "the single-stream blocks patched as ('single_block', i)"},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": FLUX_STYLE_DOUBLE, "single_block": FLUX_STYLE_SINGLE},
    ),
    Family(
        name="HunyuanVideo",
        model_class="comfy.ldm.hunyuan_video.model:HunyuanVideo",
        make_model=lambda: tiny_hunyuan_video(0),
        make_cond=lambda seed: hunyuan_video_cond(seed),
        latent=(1, 16, 3, 8, 8),
        forward_params={"x": "latent: batch, frames and image tokens of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "txt_byt5": "HunyuanVideo 1.5 byT5 glyph tokens: counted as text tokens",
                        "clip_fea": "vision tokens: counted as text tokens",
                        "guiding_frame_index": "I2V token replacement: such calls are computed in full",
                        "ref_latent": "reference latent: its tokens are cached with the image tokens",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"params.mlp_ratio": "MLP width for the FLOP estimate",
                     "patch_size": "token grid (frames, rows, columns) of a latent",
                     "hidden_size": "FLOP estimate",
                     "double_blocks": "the double-stream blocks patched as ('double_block', i)",
                     "single_blocks": "the single-stream blocks patched as ('single_block', i)"},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": FLUX_STYLE_DOUBLE, "single_block": FLUX_STYLE_SINGLE},
    ),
    Family(
        name="Wan",
        model_class="comfy.ldm.wan.model:WanModel",
        make_model=lambda: tiny_wan("t2v", 0),
        make_cond=lambda seed: wan_cond(seed),
        latent=(1, 16, 3, 8, 8),
        forward_params={"x": "latent: batch, frames and video tokens of the call",
                        "context": "text context (the cross-attention's; not a token stream of the blocks)",
                        "time_dim_concat": "frames appended to the video (Phantom): cached as reference tokens",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patch_size": "token grid (frames, rows, columns) of a latent",
                     "ref_conv": "a reference_latent prepended through it counts as reference tokens",
                     "blocks": "the WanAttentionBlocks patched as ('double_block', i)"},
        block_lists={"double_block": "blocks"},
        blocks={"double_block": WAN_BLOCK},
    ),
    Family(
        name="LTX-Video",
        model_class="comfy.ldm.lightricks.model:LTXVModel",
        make_model=lambda: tiny_ltxv(0),
        make_cond=lambda seed: ltx_cond(seed),
        latent=(1, 16, 3, 8, 8),
        forward_params={"x": "latent: batch, frames and image tokens of the call",
                        "keyframe_idxs": "guide keyframes: their tokens are cached as reference tokens",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patchifier.patch_size": "token grid (frames, rows, columns) of a latent",
                     "inner_dim": "width of the modulation rows",
                     "transformer_blocks": "the blocks patched as ('double_block', i)"},
        block_lists={"double_block": "transformer_blocks"},
        blocks={"double_block": LTX_BLOCK},
    ),
]
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}


@functools.lru_cache(maxsize=None)
def tiny_diffusion_model(name: str):
    return FAMILIES_BY_NAME[name].make_model().model.diffusion_model


def family_entries(fam: Family) -> list:
    out = [symbol(fam.model_class, f"{fam.name} adapter: the model class it recognises (type identity)", "class")]
    for p, why in fam.forward_params.items():
        def check_param(p=p):
            cls = _resolve(fam.model_class)
            sig = _signature(getattr(cls, "_forward", None) or cls.forward, f"{fam.name} _forward")
            expect(p in sig.parameters, f"{_dotted(fam.model_class)}._forward has no parameter {p!r} (signature {sig})")
        out.append(observed(f"{_dotted(fam.model_class)}._forward parameter {p!r}", f"{fam.name}: {why}", check_param))

    def check_bind():
        calls = _calls(fam.name)
        errors = [c["bind_error"] for c in calls if "bind_error" in c]
        expect(not errors, f"the wrapper's (args, kwargs) do not bind to _forward's signature: {errors[:1]}")
        expect(all(c["is_model"] for c in calls), "executor.class_obj is not the family's diffusion model")
    out.append(observed(f"{fam.name} DIFFUSION_MODEL wrapper (args, kwargs) bind to _forward",
                        f"{fam.name}: the adapter reads the call's inputs by _forward's parameter names", check_bind))
    for path, why in fam.model_attrs.items():
        def check_attr(path=path):
            _attr_path(tiny_diffusion_model(fam.name), path, type(tiny_diffusion_model(fam.name)).__name__)
        out.append(observed(f"{fam.name} model.{path}", f"{fam.name}: {why}", check_attr))

    for kind, spec in fam.blocks.items():
        where = f"{fam.name} patches_replace['dit'][('{kind}', i)]"

        def check_called(kind=kind):
            dm = tiny_diffusion_model(fam.name)
            count = len(getattr(dm, fam.block_lists[kind]))
            seen = _blocks(fam.name, kind)["indices"]
            expect(seen == set(range(count)),
                   f"the model called the ('{kind}', i) patch for blocks {sorted(seen)} of {count}: ComfyUI no longer "
                   f"looks up patches_replace['dit'][('{kind}', i)] for every block")
        out.append(observed(f"{where} is called for every block",
                            f"{fam.name}: ClusCa runs every block through its patch (full and cached steps)",
                            check_called))
        for part, keys in (("args", spec.args), ("extra", spec.extra)):
            for key, why in keys.items():
                def check_key(kind=kind, part=part, key=key):
                    seen = _blocks(fam.name, kind)[part]
                    expect(key in seen, f"{part} has no key {key!r} (it has: {sorted(seen)})")
                out.append(observed(f"{where} {part}[{key!r}]", f"{fam.name}: {why}", check_key))
        for key, why in spec.original_returns.items():
            def check_out(kind=kind, key=key):
                seen = _blocks(fam.name, kind)["out"]
                expect(key in seen, f"extra['original_block'](args) returns no {key!r} (it returns: {sorted(seen)})")
            out.append(observed(f"{where} original_block(args)[{key!r}]", f"{fam.name}: {why}", check_out))

        def check_returns(kind=kind):
            # the probe's patches returned only these keys, and sampling went through
            expect(bool(_blocks(fam.name, kind)["indices"]), f"the ('{kind}', i) patches were never called")
        out.append(observed(f"{where} may return only {{{', '.join(map(repr, spec.returns))}}}",
                            f"{fam.name}: the pack's block patch returns exactly these keys", check_returns))
        for path, why in spec.attrs.items():
            def check_block_attr(kind=kind, path=path):
                dm = tiny_diffusion_model(fam.name)
                for i, block in enumerate(getattr(dm, fam.block_lists[kind])):
                    value = _attr_path(block, path, f"{fam.block_lists[kind]}[{i}]")
                    if path == "modulation":
                        expect(bool(value), f"{fam.block_lists[kind]}[{i}].modulation is {value!r} (falsy)")
            out.append(observed(f"{fam.name} {kind}.{path}", f"{fam.name}: {why}", check_block_attr))
        for path, why in spec.branches.items():
            def check_branch(kind=kind, path=path):
                seen = _blocks(fam.name, kind)["hooks"]
                expect(path in seen, f"running the block did not call its submodule {path!r} (forward hooks fired "
                                     f"on: {sorted(seen)})")
            out.append(observed(f"{fam.name} {kind}.{path} runs inside the block",
                                f"{fam.name}: full steps capture the {why} with a forward hook", check_branch))
        for label, (fn, why) in spec.checks.items():
            def check_behaviour(kind=kind, fn=fn):
                dm = tiny_diffusion_model(fam.name)
                with torch.no_grad():
                    fn(getattr(dm, fam.block_lists[kind])[0], dm)
            out.append(observed(f"{fam.name} {kind}.{label}", f"{fam.name}: {why}", check_behaviour))
    return out


# -- the sampler: wrappers, transformer_options, callbacks ----------------------------------------------------

SAMPLER_FAMILY = FAMILIES[0].name     # the run the sampler entries read (any family would do)


def _check_outer_class_obj():
    info = _outer(SAMPLER_FAMILY)
    expect(info[0]["has_model_options"], f"executor.class_obj ({info[0]['guider']}) has no model_options")


def _check_outer_sigmas():
    info = _outer(SAMPLER_FAMILY)
    s = info[0]["sigmas"]
    expect(isinstance(s, torch.Tensor) and s.ndim == 1 and s.numel() == 4,
           f"the wrapper's 4th positional argument (or kwarg 'sigmas') is {type(s).__name__} "
           f"{tuple(getattr(s, 'shape', ()))}, not the run's 3-step schedule (4 sigmas)")
    expect(bool((s[:-1] >= s[1:]).all()) and float(s[-1]) == 0.0, f"the sigmas {s.tolist()} are not a schedule")


def _check_percent_to_sigma():
    info = _outer(SAMPLER_FAMILY)
    value = info[0]["percent_to_sigma"]
    expect(not isinstance(value, Exception),
           f"executor.class_obj.model_patcher.model.model_sampling.percent_to_sigma failed: {value!r}")
    expect(value[0] > value[1], f"percent_to_sigma(0.0), (1.0) = {value}: not decreasing")


def _check_model_options_swap():
    calls = _calls(SAMPLER_FAMILY)
    info = _outer(SAMPLER_FAMILY)
    expect("clone_error" not in info[0], f"swapping in create_model_options_clone(guider.model_options) failed: "
                                         f"{info[0].get('clone_error')}")
    expect(info[0]["clone_isolated"], "create_model_options_clone shares transformer_options with the original")
    expect(all(c.get("marker") for c in calls), "a key set in guider.model_options['transformer_options'] inside "
                                                "the OUTER_SAMPLE wrapper did not reach the model calls")


def _check_diffusion_class_obj():
    calls = _calls(SAMPLER_FAMILY)
    expect(all(c["is_model"] for c in calls), f"executor.class_obj is a {calls[0]['class'].__name__}, not the "
                                              "diffusion model")


def _check_sigmas_key():
    calls, outer = _calls(SAMPLER_FAMILY), _outer(SAMPLER_FAMILY)
    schedule = [float(v) for v in outer[0]["sigmas"]]
    for c in calls:
        s = c.get("sigmas")
        expect(isinstance(s, torch.Tensor), f"transformer_options has no tensor 'sigmas' (keys: {sorted(c['to_keys'])})")
        value = float(s.flatten()[0])
        expect(any(abs(value - v) <= 1e-5 * max(1.0, abs(v)) for v in schedule),
               f"transformer_options['sigmas'] = {value} is not a sigma of the run's schedule {schedule}")


def _check_uuids_key():
    for c in _calls(SAMPLER_FAMILY):
        u = c.get("uuids")
        expect(isinstance(u, (list, tuple)) and len(u) > 0,
               f"transformer_options['uuids'] is {u!r} (keys: {sorted(c['to_keys'])})")
        batch = c["x"].shape[0]
        expect(batch % len(u) == 0, f"a batch of {batch} rows with {len(u)} uuids: not one uuid per equal chunk")
    expect(any(len(set(c["uuids"])) == 2 for c in _calls(SAMPLER_FAMILY)),
           "with cfg 2 no call carried two distinct uuids (cond and uncond)")


@functools.lru_cache(maxsize=None)
def clone_probe() -> dict:
    m = FAMILIES[0].make_model()
    seen = []
    m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, "contract",
                            lambda *args: seen.append(args))
    c = m.clone()
    result = {"args": [tuple(type(a).__name__ for a in args) for args in seen],
              "identity": [len(args) == 2 and args[0] is m and args[1] is c for args in seen]}
    m.remove_callbacks_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, "contract")
    seen.clear()
    m.clone()
    result["after_remove"] = len(seen)
    p = m.clone()
    p.set_model_patch_replace("patch", "dit", "double_block", 0)
    result["patches"] = p.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    return result


def _check_on_clone():
    r = clone_probe()
    expect(len(r["args"]) == 1, f"the ON_CLONE callback was called {len(r['args'])} times for one clone()")
    expect(r["identity"][0], f"the ON_CLONE callback got ({', '.join(r['args'][0])}), not (original, clone)")
    expect(r["after_remove"] == 0, "remove_callbacks_with_key did not remove the ON_CLONE callback")


def _check_patch_storage():
    patches = clone_probe()["patches"]
    expect(patches.get(("double_block", 0)) == "patch",
           f"set_model_patch_replace(patch, 'dit', 'double_block', 0) stored {patches!r} under "
           "transformer_options['patches_replace']['dit'], not under the key ('double_block', 0)")


def _check_attention_override():
    expect(_run(SAMPLER_FAMILY)["attention"] > 0,
           "transformer_options['optimized_attention_override'] was never called during sampling")


SAMPLER = [
    symbol("comfy.patcher_extension:WrappersMP.OUTER_SAMPLE", "per-run state: the wrapper around each sampling run"),
    symbol("comfy.patcher_extension:WrappersMP.DIFFUSION_MODEL", "per-call decision (full or cached step)"),
    symbol("comfy.patcher_extension:CallbacksMP.ON_CLONE", "every clone of a ClusCa model gets its own holder"),
    symbol("comfy.patcher_extension:WrappersMP.APPLY_MODEL",
           "generic block forecast: per-call decision around BaseModel.apply_model (many models' forwards call no "
           "DIFFUSION_MODEL wrapper)"),
    params("comfy.model_base:BaseModel._apply_model", "generic block forecast: the APPLY_MODEL wrapper's arguments "
           "are named by this signature (the latent x, transformer_options)", keywords=["x", "transformer_options"]),
    symbol("comfy.ldm.common_dit:rms_norm", "LTX: the feed-forward's norm, for the representatives' refresh",
           "callable"),
    params("comfy.model_patcher:ModelPatcher.add_wrapper_with_key",
           "installs the OUTER_SAMPLE and DIFFUSION_MODEL wrappers (wrapper type, key, function)", positional=3),
    params("comfy.model_patcher:ModelPatcher.remove_wrappers_with_key",
           "applying ClusCa twice replaces the wrappers instead of stacking them", positional=2),
    params("comfy.model_patcher:ModelPatcher.add_callback_with_key",
           "installs the ON_CLONE callback (callback type, key, function)", positional=3),
    params("comfy.model_patcher:ModelPatcher.remove_callbacks_with_key",
           "applying ClusCa twice replaces the callback", positional=2),
    params("comfy.model_patcher:ModelPatcher.set_model_patch_replace",
           "installs one block patch per block (patch, 'dit', kind, index)", positional=4),
    symbol("comfy.model_patcher:ModelPatcher.clone", "Apply ClusCa returns a clone of the model", "callable"),
    params("comfy.model_patcher:create_model_options_clone",
           "each sampling run gets its own model_options with its own holder", positional=1),
    params("comfy.samplers:CFGGuider.outer_sample",
           "the OUTER_SAMPLE wrapper reads the run's sigmas as its 4th positional argument",
           order=["noise", "latent_image", "sampler", "sigmas"]),
    observed("ON_CLONE callback(original, clone); remove_callbacks_with_key removes it",
             "own_holder_on_clone gives the clone its own holder", _check_on_clone),
    observed("set_model_patch_replace -> transformer_options['patches_replace']['dit'][(kind, i)]",
             "a block patch installed by another node before ClusCa is found there and kept", _check_patch_storage),
    observed("OUTER_SAMPLE executor.class_obj.model_options", "the run's model_options are swapped for a clone "
             "holding the run's holder", _check_outer_class_obj),
    observed("OUTER_SAMPLE args[3] / kwargs['sigmas'] is the run's schedule",
             "the step schedule (full / cached steps) is built from it", _check_outer_sigmas),
    observed("OUTER_SAMPLE executor.class_obj.model_patcher.model.model_sampling.percent_to_sigma",
             "start_percent / end_percent become sigmas", _check_percent_to_sigma),
    observed("create_model_options_clone + guider.model_options swap reaches every model call",
             "the run's holder travels in transformer_options to the wrappers and block patches",
             _check_model_options_swap),
    observed("DIFFUSION_MODEL executor.class_obj is the diffusion model", "the adapter reads the model's blocks and "
             "sizes from it, and binds the call's arguments to its _forward", _check_diffusion_class_obj),
    observed("transformer_options['sigmas'] (DIFFUSION_MODEL call)", "which step of the schedule a model call is",
             _check_sigmas_key),
    observed("transformer_options['uuids'] (DIFFUSION_MODEL call)",
             "separate caches per conditioning (cond / uncond, batched or split)", _check_uuids_key),
    observed("transformer_options['optimized_attention_override'] (tests: devkit AttentionCounter)",
             "the tests count attention calls with it to prove cached steps run no attention",
             _check_attention_override),
]


# -- the pack's DiT (nodes/dit) on ComfyUI's building blocks ------------------------------------------------

def _check_embedding_out_dtype():
    emb = comfy.ops.disable_weight_init.Embedding(4, 3)
    torch.nn.init.normal_(emb.weight)
    try:
        out = emb(torch.tensor([1, 2]), out_dtype=torch.float32)
    except TypeError as exc:
        raise ContractBroken(f"comfy.ops Embedding no longer takes out_dtype: {exc}") from exc
    expect(out.shape == (2, 3), f"comfy.ops Embedding returned shape {tuple(out.shape)}")


def _check_attention_options():
    from comfy.ldm.modules.attention import optimized_attention
    q = torch.randn(1, 5, 8)
    calls = []

    def override(func, *args, **kwargs):
        calls.append(1)
        return func(*args, **kwargs)
    try:
        out = optimized_attention(q, q, q, 2, transformer_options={"optimized_attention_override": override})
    except TypeError as exc:
        raise ContractBroken(f"optimized_attention(q, k, v, heads, transformer_options=...) fails: {exc}") from exc
    expect(out.shape == q.shape, f"optimized_attention returned shape {tuple(out.shape)} for {tuple(q.shape)}")
    expect(bool(calls), "optimized_attention ignored transformer_options (its attention override was not called)")


def _check_dit_beta_schedule():
    sigmas = tiny_dit(0).model.model_sampling.sigmas.double()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    expected = ((1 - ac) / ac).sqrt()
    expect(sigmas.shape == expected.shape and torch.allclose(sigmas, expected, rtol=1e-5),
           "sampling_settings {'beta_schedule': 'sqrt_linear', 'linear_start': 1e-4, 'linear_end': 0.02, "
           "'timesteps': 1000} no longer gives DiT's betas linear in beta")


def _check_pre_cfg_args():
    seen = _pre_cfg()
    missing = [k for k in ("conds", "conds_out") if k not in seen["keys"]]
    expect(not missing, f"the pre-CFG function's args have no {missing} (keys: {sorted(seen['keys'])})")


def _check_pre_cfg_result_used():
    seen = _pre_cfg()
    expect(torch.allclose(seen["replaced"], seen["same"], rtol=1e-5, atol=1e-4),
           "CFG did not use the conds_out list returned by the sampler_pre_cfg_function")


def _check_conds_keep_keys():
    seen = _pre_cfg()
    label_key = pack_module("nodes.dit.labels").LABEL_KEY
    expect(label_key in seen["negative_keys"], f"the sampler's conds no longer carry the conditioning dict's own "
                                               f"keys ({label_key!r} missing; keys: {sorted(seen['negative_keys'])})")


DIT = [
    symbol("comfy.ops:disable_weight_init.Linear", "DiT layers (weight casting, offloading, LoRA)", "class"),
    symbol("comfy.ops:disable_weight_init.Conv2d", "DiT patch embedding", "class"),
    symbol("comfy.ops:disable_weight_init.LayerNorm", "DiT norms", "class"),
    symbol("comfy.ops:disable_weight_init.Embedding", "DiT class-label table", "class"),
    observed("comfy.ops Embedding(labels, out_dtype=...)", "DiT's label embedding in the compute dtype",
             _check_embedding_out_dtype),
    params("comfy.ldm.modules.attention:optimized_attention",
           "DiT attention (ComfyUI's attention backends and overrides): q, k, v, heads", positional=4),
    observed("optimized_attention(..., transformer_options=...) honours the override",
             "DiT attention passes transformer_options (attention overrides, the tests' counter)",
             _check_attention_options),
    params("comfy.ldm.modules.diffusionmodules.util:timestep_embedding", "DiT timestep features (t, dim)",
           positional=2),
    params("comfy.ldm.common_dit:pad_to_patch_size", "DiT pads latents to the patch size (img, (p, p))",
           positional=2),
    params("comfy.patcher_extension:WrapperExecutor.new_class_executor",
           "DiT's forward runs the DIFFUSION_MODEL wrappers, ClusCa's among them (function, model, wrappers)",
           positional=3),
    symbol("comfy.patcher_extension:WrapperExecutor.execute", "DiT's forward runs the wrapped _forward",
           "callable"),
    params("comfy.patcher_extension:get_all_wrappers",
           "DiT's forward collects the DIFFUSION_MODEL wrappers (wrapper type, transformer_options)", positional=2),
    params("comfy.model_base:BaseModel.__init__", "DiTModel builds the pack's DiT as ComfyUI's diffusion model "
           "(model_config, model_type, device=, unet_model=)", positional=2, keywords=["device", "unet_model"]),
    symbol("comfy.model_base:ModelType.EPS", "DiT predicts noise"),
    params("comfy.model_base:BaseModel.load_model_weights", "the DiT loader's weights (state dict, prefix)",
           positional=2),
    symbol("comfy.supported_models_base:BASE", "DiTModelConfig's base class", "class"),
    params("comfy.supported_models_base:BASE.__init__", "DiTModelConfig(unet_config)", positional=1),
    params("comfy.supported_models_base:BASE.set_inference_dtype",
           "the DiT and reference loaders set the weight dtype (dtype, manual cast dtype)", positional=2),
    params("comfy.supported_models_base:BASE.get_model",
           "the DiT and reference loaders build the BaseModel (state dict, prefix, device=)", positional=2,
           keywords=["device"]),
    params("comfy.supported_models_base:BASE.process_unet_state_dict",
           "the reference loader maps state-dict keys like ComfyUI's loaders", positional=1),
    observed("sampling_settings beta_schedule 'sqrt_linear' (betas linear in beta)", "DiT's (ADM's) noise schedule",
             _check_dit_beta_schedule),
    symbol("comfy.conds:CONDRegular", "DiT's class labels become the model input y", "class"),
    symbol("comfy.latent_formats:SD15", "DiT latents are SD 1.x VAE latents", "class"),
    params("comfy.model_patcher:ModelPatcher.set_model_sampler_pre_cfg_function",
           "DiTs without a null class: a null negative gives the positive's prediction", positional=1),
    observed("sampler_pre_cfg_function args['conds'], args['conds_out']", "the null-class negative of a DiT without "
             "a null class is found in conds[1] and replaced in conds_out", _check_pre_cfg_args),
    observed("the conds_out a sampler_pre_cfg_function returns is what CFG combines",
             "the replaced negative prediction makes CFG have no effect", _check_pre_cfg_result_used),
    observed("sampler conds keep the conditioning dict's keys ('dit_class_label')",
             "extra_conds and the pre-CFG function read DiT's class label from the conditioning dict",
             _check_conds_keep_keys),
]


def reference_config_fields(model: str, image_model: str) -> list:
    """The config fields of a bundled reference model every tested ComfyUI version must know: its
    ``unet_config`` keys without ``image_model`` and the version-dependent ones ``nodes/compat.py`` handles."""
    import json

    import safetensors
    path = pack_module("nodes.reference.loader").REFERENCE_DIR / f"{model}.safetensors"
    with safetensors.safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()[pack_module("nodes.reference.spec").METADATA_KEY])["unet_config"]
    version_dependent = pack_module("nodes.compat").VERSION_FIELDS[image_model][2]
    return sorted(k for k in config if k != "image_model" and k not in version_dependent)


# -- loaders, nodes, UI -----------------------------------------------------------------------------------

def _check_executing_context():
    from comfy_execution.utils import get_executing_context
    hints = typing.get_type_hints(get_executing_context)
    ret = [a for a in typing.get_args(hints.get("return")) if a is not type(None)] or [hints.get("return")]
    have = list(getattr(ret[0], "_fields", ()) or getattr(ret[0], "__annotations__", {}))
    missing = [f for f in ("prompt_id", "node_id") if f not in have]
    expect(not missing, f"get_executing_context() returns {getattr(ret[0], '__name__', ret[0])} without "
                        f"{missing} (it has {have})")
    expect(get_executing_context() is None, "get_executing_context() outside a prompt is not None")


def _server_class() -> ast.ClassDef:
    tree = ast.parse((COMFY_DIR / "server.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "PromptServer":
            return node
    raise ContractBroken("server.py has no class PromptServer")


def _check_prompt_server():
    # read from server.py's source: importing it starts nothing, but needs the server's whole environment
    cls = _server_class()
    methods = {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    send = methods.get("send_sync")
    expect(send is not None, "PromptServer has no method send_sync")
    names = [a.arg for a in send.args.args]
    expect(names[:4] == ["self", "event", "data", "sid"], f"PromptServer.send_sync{tuple(names)} is not "
                                                          "(self, event, data, sid)")
    init = methods.get("__init__")
    assigned = set()
    for node in ast.walk(init) if init else ():
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                    assigned.add(f"{t.value.id}.{t.attr}")
    missing = [a for a in ("PromptServer.instance", "self.loop", "self.client_id") if a not in assigned]
    expect(not missing, f"PromptServer.__init__ no longer sets {missing}")


def _io_input(type_name: str, names: list, why: str) -> Entry:
    return params(f"comfy_api.latest:io.{type_name}.Input.__init__", why, positional=1, keywords=names)


def _check_custom_type():
    from comfy_api.latest import io
    t = io.Custom("CLUSCA_CONTRACT")
    for part, names in (("Input", ["id", "tooltip"]), ("Output", ["id", "tooltip"])):
        sig = _signature(getattr(t, part).__init__, f"io.Custom(...).{part}")
        missing = [n for n in names if n not in sig.parameters]
        expect(not missing, f"io.Custom(...).{part} has no parameter {missing} (signature {sig})")


def _check_hidden_unique_id():
    from comfy_api.latest import io
    expect(hasattr(io.Hidden, "unique_id"), "io.Hidden has no unique_id")


CORE = [
    # the V3 node API (nodes/*.py, nodes/dit, nodes/reference)
    symbol("comfy_api.latest:ComfyExtension", "the pack's entry point class (comfy_entrypoint)", "class"),
    symbol("comfy_api.latest:ComfyExtension.get_node_list", "lists the pack's nodes", "callable"),
    symbol("comfy_api.latest:io.ComfyNode", "base class of every node of the pack", "class"),
    *[symbol(f"comfy_api.latest:io.ComfyNode.{m}", f"the pack's nodes implement {m}", "callable")
      for m in ("define_schema", "execute", "validate_inputs")],
    params("comfy_api.latest:io.Schema", "every node's schema",
           keywords=["node_id", "display_name", "category", "description", "inputs", "outputs", "hidden"]),
    symbol("comfy_api.latest:io.NodeOutput", "every node's result", "class"),
    observed("comfy_api.latest.io.Hidden.unique_id", "Apply ClusCa knows its node id (UI stats, cluster map)",
             _check_hidden_unique_id),
    _io_input("Int", ["tooltip", "default", "min", "max", "step", "control_after_generate"], "integer inputs"),
    _io_input("Float", ["tooltip", "default", "min", "max", "step", "optional"], "float inputs"),
    _io_input("Boolean", ["tooltip", "default", "optional"], "switches"),
    _io_input("Combo", ["options", "tooltip", "default", "optional"], "choices (mode, dtype, checkpoint)"),
    _io_input("String", ["tooltip", "default", "multiline"], "class names and prompts"),
    _io_input("Model", ["tooltip"], "MODEL inputs"),
    _io_input("Latent", ["tooltip"], "the cluster map's samples input"),
    _io_input("Image", ["tooltip", "optional"], "the cluster map's image input"),
    *[params(f"comfy_api.latest:io.{t}.Output.__init__", f"{t} outputs", keywords=names)
      for t, names in (("Model", ["tooltip"]), ("Conditioning", ["display_name", "tooltip"]),
                       ("Latent", ["display_name", "tooltip"]), ("Image", ["tooltip"]))],
    observed("comfy_api.latest.io.Custom(name).Input / .Output", "the reference model's CLUSCA_REFERENCE socket",
             _check_custom_type),
    # UI stats (nodes/ui_stats.py)
    observed("comfy_execution.utils.get_executing_context() -> (prompt_id, node_id)",
             "the stats message names the prompt and the sampler node", _check_executing_context),
    observed("server.PromptServer.send_sync(event, data, sid), .instance, .loop, .client_id",
             "the run's statistics go to the page over ComfyUI's websocket", _check_prompt_server),
    # model loading (nodes/dit/loader.py, nodes/reference/loader.py)
    symbol("comfy.model_management:get_torch_device", "load device of loaded models", "callable"),
    symbol("comfy.model_management:unet_offload_device", "offload device of loaded models", "callable"),
    params("comfy.model_management:unet_dtype", "the DiT loader's 'default' weight dtype",
           keywords=["model_params", "supported_dtypes", "weight_dtype"]),
    params("comfy.model_management:unet_manual_cast",
           "manual cast dtype of loaded models (dtype, load device, supported dtypes)", positional=3),
    params("comfy.utils:load_torch_file", "the DiT loader reads .safetensors (path, safe_load=True)",
           positional=1, keywords=["safe_load"]),
    params("comfy.utils:calculate_parameters", "the DiT loader's dtype choice (state dict)", positional=1),
    params("comfy.utils:weight_dtype", "the DiT loader's dtype choice (state dict)", positional=1),
    params("comfy.model_patcher:ModelPatcher.__init__", "the loaders wrap their BaseModel "
           "(model, load_device=, offload_device=)", positional=1, keywords=["load_device", "offload_device"]),
    params("folder_paths:get_filename_list", "the DiT loader's checkpoint list (folder)", positional=1),
    params("folder_paths:get_full_path", "the DiT loader finds the file (folder, name)", positional=2),
    symbol("comfy.supported_models:FluxSchnell", "the FLUX reference model's config class", "class"),
    symbol("comfy.supported_models:HunyuanVideo", "the HunyuanVideo reference model's config class", "class"),
    # the bundled reference models' configs (nodes/reference, nodes/compat.py)
    fields("comfy.ldm.flux.model:FluxParams", reference_config_fields("flux_shapes", "flux"),
           "the FLUX reference model's config (reference_models/flux_shapes.safetensors) builds FluxParams; "
           "nodes/compat.py reads its dataclass fields"),
    fields("comfy.ldm.hunyuan_video.model:HunyuanVideoParams",
           reference_config_fields("hunyuan_video_shapes", "hunyuan_video"),
           "the HunyuanVideo reference model's config builds HunyuanVideoParams; nodes/compat.py reads its "
           "dataclass fields"),
    # devkit (what the tests build and sample through)
    params("comfy.sample:prepare_noise", "tests: sampling noise (latent, seed)", positional=2),
    params("comfy.sample:sample", "tests: sampling like KSampler (model, noise, steps, cfg, sampler, scheduler, "
           "positive, negative, latent)", positional=9, keywords=["denoise", "callback", "disable_pbar", "seed"]),
    params("comfy.sample:sample_custom", "tests: sampling with custom sigmas (model, noise, cfg, sampler, sigmas, "
           "positive, negative, latent)", positional=8, keywords=["callback", "disable_pbar", "seed"]),
    symbol("comfy.samplers:sampler_object", "tests: custom-sigma sampling", "callable"),
    symbol("comfy.options:enable_args_parsing", "tests: import ComfyUI as a library", "callable"),
    symbol("comfy.cli_args:args.cpu", "tests: CPU mode"),
    symbol("nodes:load_custom_node", "tests: the pack is loaded the way ComfyUI loads custom nodes", "callable"),
    symbol("comfy.supported_models:Flux", "tests: tiny FLUX models", "class"),
    symbol("comfy.supported_models:HunyuanVideo15", "tests: tiny HunyuanVideo 1.5 models", "class"),
]


def _check_ref_latents_method():
    """Where ComfyUI's Flux has the 'index_timestep_zero' reference mode, it reaches the wrapper by this name."""
    cls = _resolve("comfy.ldm.flux.model:Flux")
    if "index_timestep_zero" not in inspect.getsource(cls._forward):
        pytest.skip(f"ComfyUI {comfyui_version()}'s Flux has no 'index_timestep_zero' reference mode")
    m = tiny_flux(0).clone()
    seen = []

    def wrapper(executor, *args, **kwargs):
        bound = _bind(executor.class_obj, args, kwargs)
        seen.append(bound.get("ref_latents_method"))
        # recorded only: the model itself is not run (ComfyUI 0.33 runs this mode for FLUX.2-style global
        # modulation; a FLUX.1 model fails inside its double blocks)
        return torch.zeros_like(bound["x"])
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "contract", wrapper)
    pos = flux_cond(1)
    pos[0][1]["reference_latents"] = [torch.randn(1, 16, 8, 8)]
    pos[0][1]["reference_latents_method"] = "index_timestep_zero"
    sample(m, pos, pos, steps=1, cfg=1.0, latent=torch.zeros(1, 16, 8, 8))
    expect(bool(seen) and all(v == "index_timestep_zero" for v in seen),
           f"a conditioning with reference_latents_method 'index_timestep_zero' reached the DIFFUSION_MODEL "
           f"wrapper as ref_latents_method={seen[:1]}")


def _check_hunyuan_15_inputs():
    dm = tiny_hunyuan_video(0, version="1.5").model.diffusion_model
    for name in ("byt5_in", "vision_in"):
        expect(_attr_path(dm, name, "HunyuanVideo") is not None,
               f"a HunyuanVideo 1.5 model with byT5 and vision inputs has {name} None")


FAMILY_SPECIFIC = [
    symbol("comfy.ldm.wan.model:repeat_e", "Wan: the block's own expansion of per-frame modulation to tokens",
           "callable"),
    params("comfy.model_management:cast_to", "Wan: the block's modulation cast like the block does it",
           positional=1, keywords=("dtype", "device")),
    observed("Flux._forward kwarg 'ref_latents_method'", "FLUX.1: reference latents with their own timestep "
             "('index_timestep_zero') are computed in full", _check_ref_latents_method),
    observed("HunyuanVideo 1.5 model.byt5_in / model.vision_in", "HunyuanVideo 1.5: byT5 and vision tokens are "
             "counted as text tokens (the adapter reads these attributes with getattr)", _check_hunyuan_15_inputs),
]


CONTRACT = CORE + SAMPLER + DIT + [e for fam in FAMILIES for e in family_entries(fam)] + FAMILY_SPECIFIC


def _run_entry(entry: Entry) -> None:
    try:
        entry.check()
    except ContractBroken as exc:
        detail = str(exc)
    except (pytest.skip.Exception, pytest.fail.Exception):
        raise
    except Exception as exc:  # noqa: BLE001 - a check that crashes still names its entry
        detail = f"checking it raised {type(exc).__name__}: {exc}"
    else:
        return
    pytest.fail(f"ComfyUI {comfyui_version()} broke the contract: {entry.name}: {detail}. "
                f"ClusCa needs it for: {entry.why}", pytrace=False)


@pytest.mark.parametrize("entry", CONTRACT, ids=[e.name for e in CONTRACT])
def test_contract(entry):
    _run_entry(entry)


# -- the table itself ------------------------------------------------------------------------------------

def test_entry_names_are_unique_and_every_entry_says_why():
    names = [e.name for e in CONTRACT]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    assert all(e.why.strip() for e in CONTRACT)


@pytest.mark.parametrize("entry,expected", [
    (symbol("comfy.patcher_extension:WrappersMP.OUTER_SAMPLE_RENAMED", "the per-run wrapper"),
     r"comfy\.patcher_extension\.WrappersMP\.OUTER_SAMPLE_RENAMED: comfy\.patcher_extension\.WrappersMP has no "
     r"attribute 'OUTER_SAMPLE_RENAMED' .*ClusCa needs it for: the per-run wrapper"),
    (symbol("comfy.no_such_module:x", "nothing"), r"module comfy\.no_such_module cannot be imported"),
    (params("comfy.ldm.flux.model:Flux._forward", "a renamed parameter", keywords=["x", "guiding_frame"]),
     r"Flux\._forward has no parameter 'guiding_frame' \(signature .*ClusCa needs it for: a renamed parameter"),
    (params("comfy.samplers:CFGGuider.outer_sample", "order", order=["sigmas"]),
     r"outer_sample starts with parameters \['noise'\], not \['sigmas'\]"),
    (params("comfy.utils:weight_dtype", "too many positional arguments", positional=5),
     r"weight_dtype takes 2 positional arguments; the pack passes 5"),
    (fields("comfy.ldm.flux.layers:ModulationOut", ["shift", "offset"], "fields"),
     r"ModulationOut has no field 'offset'"),
])
def test_a_broken_entry_fails_naming_what_changed_and_why(entry, expected):
    """The checks fail, and say what changed and why the pack needs it, for names that do not exist."""
    with pytest.raises(pytest.fail.Exception, match=expected):
        _run_entry(entry)


def test_a_missing_block_key_or_attribute_fails_naming_it():
    """The family checks fail on a key the blocks do not pass and an attribute they do not have."""
    fam = FAMILIES[0]
    spec = dataclasses.replace(fam.blocks["double_block"], args={"img_tokens": "renamed img"},
                               attrs={"img_attn.projection": "renamed proj"}, branches={}, checks={},
                               original_returns={}, extra={})
    broken = dataclasses.replace(fam, name=fam.name, forward_params={}, model_attrs={"params.axis_dims": "renamed"},
                                 blocks={"double_block": spec})
    entries = {e.name: e for e in family_entries(broken)}
    expected = {
        "FLUX.1 patches_replace['dit'][('double_block', i)] args['img_tokens']": r"args has no key 'img_tokens' \(it has: \[",
        "FLUX.1 double_block.img_attn.projection": r"double_blocks\[0\]\.img_attn has no attribute 'projection' "
                                                   r"\(its submodules: .*proj",
        "FLUX.1 model.params.axis_dims": r"Flux\.params has no attribute 'axis_dims'",
    }
    for name, pattern in expected.items():
        with pytest.raises(pytest.fail.Exception, match=pattern):
            _run_entry(entries[name])
