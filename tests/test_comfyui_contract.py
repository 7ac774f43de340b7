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
  are generated from it, and the probe run records what a real model of the family passes, including the first
  call of block 0 (inputs, branch outputs, keyword arguments, output) for ``call_checks`` such as "the
  branches and gates the pack reads add up to the block's output". A kind the model calls without a patch point
  (Lumina 2 / Z-Image) sets ``BlockSpec.forward``: the probe object-patches each block's ``forward`` as the pack
  does. A run with other inputs (e.g. edit references with their own timestep) is a ``PROBE_RUNS`` entry.
- Something that exists only from some ComfyUI version on (a family, a parameter, the multi-GPU split): give it
  that version (``Family.since``, ``(why, version)`` table values, :func:`gated`); older trees skip it with the
  reason, every tree from that version on checks it.
- Anything else the pack reads at run time: an ``observed(...)`` entry with a probe that records it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import math
import re
import threading
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
from devkit.tiny_flux_variants import VARIANTS as FLUX_VARIANTS, with_references
from devkit.tiny_generic import GENERIC_MODELS
from devkit.tiny_lumina import lumina_cond, lumina_latent, tiny_lumina
from devkit.tiny_qwen_image import qwen_image_cond, reference_latent, tiny_qwen_image

load_pack()

import comfy.model_management  # noqa: E402
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


def _version(text: str) -> tuple:
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in text.split("."))


def since(version: Optional[str], what: str) -> None:
    """Skip on ComfyUI trees older than ``version``: the pack expects ``what`` from that version on (an entry that
    applies keeps failing on every newer tree that loses it)."""
    if version is not None and _version(comfyui_version()) < _version(version):
        pytest.skip(f"ComfyUI {comfyui_version()} has no {what} (the pack expects it from {version} on)")


def gated(entry: Entry, version: Optional[str], what: str) -> Entry:
    """``entry``, applying only from ComfyUI ``version`` on (see :func:`since`)."""
    if version is None:
        return entry

    def check():
        since(version, what)
        entry.check()
    return Entry(entry.name, entry.why, check)


def _why(value) -> tuple:
    """A table value: ``why``, or ``(why, version)`` for something the pack expects from that version on."""
    return (value, None) if isinstance(value, str) else tuple(value)


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


def _bind(dm, args: tuple, kwargs: dict, method: Optional[str] = None) -> dict:
    """The DIFFUSION_MODEL wrapper's arguments by name, from the model's own ``_forward`` signature (how the
    pack names them; ``method``: another method whose signature applies, ``"_apply_model"`` for APPLY_MODEL)."""
    fn = getattr(type(dm), method) if method else (getattr(type(dm), "_forward", None) or type(dm).forward)
    bound = inspect.signature(fn).bind(dm, *args, **kwargs)
    out = dict(bound.arguments)
    out.pop("self", None)
    out.update(out.pop("kwargs", None) or {})
    return out


def _clone_tensors(d: dict) -> dict:
    return {k: v.detach().clone() for k, v in d.items() if isinstance(v, torch.Tensor)}


def _branch_hook(r: dict, branch: str, sample: Optional[dict]):
    """Records that ``branch`` ran; for the sampled call also its first input and its output (copies: blocks may
    change them in place afterwards)."""
    def hook(_module, inputs, output):
        r["hooks"].add(branch)
        if sample is not None and branch not in sample["branches"] and isinstance(output, torch.Tensor):
            sample["branches"][branch] = output.detach().clone()
            if inputs and isinstance(inputs[0], torch.Tensor):
                sample["inputs"][branch] = inputs[0].detach().clone()
    return hook


@functools.lru_cache(maxsize=None)
def family_probe(name: str) -> dict:
    """One sampling run of the family's tiny model (cfg 2: cond and uncond) through ``comfy.sample`` with an
    OUTER_SAMPLE and a DIFFUSION_MODEL wrapper and a ``patches_replace["dit"]`` entry on every block (for a
    forward-patched kind, a ModelPatcher object patch on every block's ``forward``), each recording what ComfyUI
    hands it; the block entries return only the keys the pack's patch returns. The first call of block 0 of each
    kind is kept as a sample: its inputs, branch modules' inputs and outputs, keyword arguments and output."""
    fam = FAMILIES_BY_NAME.get(name) or PROBE_RUNS[name]
    m = fam.make_model().clone()
    dm = m.model.diffusion_model
    rec = {"outer": [], "calls": [], "blocks": {k: {"args": set(), "extra": set(), "out": set(), "hooks": set(),
                                                     "indices": set(), "marker": [], "returned": set(),
                                                     "bind_error": None, "sample": None} for k in fam.blocks},
           "attention": 0, "error": None, "setup": {}, "model": dm}

    def outer(executor, *args, **kwargs):
        guider = executor.class_obj
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        info = {"guider": type(guider).__name__, "sigmas": sigmas, "has_model_options": hasattr(guider, "model_options")}
        try:
            info["percent_to_sigma"] = [float(guider.model_patcher.model.model_sampling.percent_to_sigma(p))
                                        for p in (0.0, 1.0)]
        except Exception as exc:  # noqa: BLE001 - recorded, the entry says what failed
            info["percent_to_sigma"] = exc
        try:
            info["sigma_max"] = float(guider.model_patcher.model.model_sampling.sigma_max)
        except Exception as exc:  # noqa: BLE001 - recorded, the entry says what failed
            info["sigma_max"] = exc
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
                        uuids=to.get("uuids"), marker=to.get(MARKER), cond_or_uncond=to.get("cond_or_uncond"),
                        shapes={k: tuple(v.shape) for k, v in bound.items() if isinstance(v, torch.Tensor)})
        except TypeError as exc:
            call["bind_error"] = exc
        rec["calls"].append(call)
        return executor(*args, **kwargs)

    def capture(kind, block, index, inputs: dict, kwargs_hook: bool):
        r, spec = rec["blocks"][kind], fam.blocks[kind]
        to = inputs.get("transformer_options")
        r["marker"].append(isinstance(to, dict) and bool(to.get(MARKER)))
        sample = None
        if index == 0 and r["sample"] is None:
            sample = r["sample"] = {"in": _clone_tensors(inputs), "args": dict(inputs), "branches": {}, "inputs": {},
                                    "kwargs": {}}
        handles = []
        for branch in spec.branches:
            try:
                mod = _attr_path(block, branch, kind)
            except ContractBroken:
                continue
            handles.append(mod.register_forward_hook(_branch_hook(r, branch, sample)))
        if sample is not None and kwargs_hook:
            handles.append(block.register_forward_pre_hook(lambda _m, _a, kw: sample["kwargs"].update(kw),
                                                           with_kwargs=True))
        return sample, handles

    def block_patch(kind, index):
        spec = fam.blocks[kind]
        block = getattr(dm, fam.block_lists[kind])[index]

        def patch(args, extra):
            r = rec["blocks"][kind]
            r["indices"].add(index)
            r["args"] |= set(args)
            r["extra"] |= set(extra)
            sample, handles = capture(kind, block, index, args, kwargs_hook=True)
            try:
                out = extra["original_block"](args)
            finally:
                for h in handles:
                    h.remove()
            r["out"] |= set(out)
            if sample is not None:
                sample["out"] = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
            return {k: out[k] for k in spec.returns}
        return patch

    def forward_patch(kind, index):
        layer = getattr(dm, fam.block_lists[kind])[index]
        sig = inspect.signature(type(layer).forward)
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])

        def forward(*args, **kwargs):
            r = rec["blocks"][kind]
            r["indices"].add(index)
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                r["bind_error"] = f"{exc}"
                return type(layer).forward(layer, *args, **kwargs)
            r["args"] |= set(bound.arguments)
            sample, handles = capture(kind, layer, index, bound.arguments, kwargs_hook=False)
            try:
                out = type(layer).forward(layer, *args, **kwargs)
            finally:
                for h in handles:
                    h.remove()
            r["returned"].add(type(out).__name__)
            if sample is not None:
                sample["out"] = out.detach().clone() if isinstance(out, torch.Tensor) else out
            return out
        return forward

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
        for kind, spec in fam.blocks.items():
            for i in range(len(getattr(dm, fam.block_lists[kind], ()))):
                if spec.forward is not None:
                    m.add_object_patch(f"diffusion_model.{fam.block_lists[kind]}.{i}.forward", forward_patch(kind, i))
                else:
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
    #: checks of the probe's first call of block 0: name -> (fn(sample, block, diffusion_model, probe record), why);
    #: the sample holds the call's inputs ("in", copies), "args", the branch modules' "inputs" and "branches"
    #: (outputs), the block's keyword arguments ("kwargs") and its output ("out")
    call_checks: dict = field(default_factory=dict)
    #: set for a kind the model calls without a patch point (Lumina 2 / Z-Image): the pack reaches its blocks with
    #: an object patch on each block's ``forward``; the parameters of that forward it reads by name -> why (or
    #: (why, version)); ``args`` / ``extra`` / ``returns`` / ``original_returns`` are then unused
    forward: Optional[dict] = None


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
    #: keys the adapter reads from the bound call that may reach ``_forward`` through ``**kwargs`` -> why
    call_keys: dict = field(default_factory=dict)
    #: model-level behavioural checks: name -> (fn(diffusion_model) raising ContractBroken, why)
    model_checks: dict = field(default_factory=dict)
    #: the ComfyUI version the family is expected from (older trees skip its entries)
    since: Optional[str] = None


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


_PARTS = {"args": "arguments", "in": "tensor arguments", "branches": "captured branch outputs", "out": "outputs"}


def _part(sample_: dict, part: str, key: str):
    """``sample_[part][key]``; ContractBroken naming what the sampled block call had instead."""
    d = sample_[part]
    expect(isinstance(d, dict) and key in d, f"the sampled block call's {_PARTS[part]} have no {key!r} (they have: "
                                             f"{sorted(d) if isinstance(d, dict) else type(d).__name__})")
    return d[key]


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return f"a {type(value).__name__}"


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """``got`` equals ``want`` up to float32 rounding, else ContractBroken saying ``what`` does not hold."""
    got, want = got.float(), want.float()
    expect(got.shape == want.shape, f"{what} (shapes {tuple(got.shape)} and {tuple(want.shape)})")
    err, scale = float((got - want).abs().max()), float(want.abs().max()) + 1e-6
    expect(err <= 1e-4 * scale, f"{what} (off by {err:.3g} at a scale of {scale:.3g})")


def _by_token(t: torch.Tensor, n: int, start: Optional[int]) -> torch.Tensor:
    """A (B, 1, D) modulation as it is; a (B, 2, D) one (timestep-zero references) token by token: row 0 before
    ``start``, row 1 from it on (how the pack applies it on cached steps)."""
    if t.ndim == 3 and t.shape[1] == 2:
        expect(start is not None, f"a modulation with two rows per batch row {tuple(t.shape)} where one was expected")
        return t[:, (torch.arange(n, device=t.device) >= start).long()]
    return t


def _double_mods(block, vec) -> tuple:
    """((img attention, img MLP), (txt attention, txt MLP)) of a FLUX-style double block: its own img_mod / txt_mod
    of ``vec``, or, for a block built without modulation, ``vec`` itself (ready-made)."""
    if getattr(block, "modulation", True):
        return block.img_mod(vec), block.txt_mod(vec)
    ok = isinstance(vec, (tuple, list)) and len(vec) == 2 and all(isinstance(p, (tuple, list)) and len(p) == 2
                                                                 for p in vec)
    expect(ok, f"args['vec'] is {_describe(vec)}, not ((image attention, image MLP), (text attention, text MLP)) "
               "modulations")
    for pair, name in zip(vec, ("image", "text")):
        _modulation_fields(pair, f"args['vec'] ({name})")
    return tuple(vec)


def _check_double_vec(s, block, dm, rec) -> None:
    _double_mods(block, _part(s, "args", "vec"))


def _double_adds_up(s, block, dm, rec, zero_from=None) -> None:
    for name, (m1, m2) in zip(("img", "txt"), _double_mods(block, _part(s, "args", "vec"))):
        x = _part(s, "in", name)
        start = zero_from if name == "img" else None
        rebuilt = (x + _by_token(m1.gate, x.shape[1], start) * _part(s, "branches", f"{name}_attn.proj")
                   + _by_token(m2.gate, x.shape[1], start) * _part(s, "branches", f"{name}_mlp"))
        _close(rebuilt, _part(s, "out", name),
               f"args['{name}'] + gate1 * {name}_attn.proj + gate2 * {name}_mlp is not the block's '{name}' output")


def _double_mlp_refresh(s, block, dm, rec, zero_from=None) -> None:
    for name, (m1, m2) in zip(("img", "txt"), _double_mods(block, _part(s, "args", "vec"))):
        x = _part(s, "in", name)
        n, start = x.shape[1], (zero_from if name == "img" else None)
        mid = x + _by_token(m1.gate, n, start) * _part(s, "branches", f"{name}_attn.proj")
        h = _attr_path(block, f"{name}_norm2", "double block")(mid) * (1 + _by_token(m2.scale, n, start)) \
            + _by_token(m2.shift, n, start)
        _close(_attr_path(block, f"{name}_mlp", "double block")(h), _part(s, "branches", f"{name}_mlp"),
               f"{name}_mlp({name}_norm2(x) * (1 + scale2) + shift2), x the stream after the attention update, is not "
               "the block's MLP branch")


def _single_mod(block, vec):
    if getattr(block, "modulation", None) is not None:
        return block.modulation(vec)[0]
    _modulation_fields([vec], "args['vec']")
    return vec


def _check_single_vec(s, block, dm, rec) -> None:
    _single_mod(block, _part(s, "args", "vec"))


def _single_adds_up(s, block, dm, rec, zero_from=None) -> None:
    mod, x = _single_mod(block, _part(s, "args", "vec")), _part(s, "in", "img")
    _close(x + _by_token(mod.gate, x.shape[1], zero_from) * _part(s, "branches", "linear2"), _part(s, "out", "img"),
           "args['img'] + gate * linear2(...) is not the block's 'img' output")


def _single_mlp_split(s, block, dm, rec) -> None:
    mod, x = _single_mod(block, _part(s, "args", "vec")), _part(s, "in", "img")
    hidden = block.hidden_size
    act = block.mlp_act(block.linear1(block.pre_norm(x) * (1 + mod.scale) + mod.shift)[..., 3 * hidden:])
    seen = s["inputs"].get("linear2")
    expect(seen is not None, "linear2's input was not captured")
    expect(seen.shape[-1] == hidden + act.shape[-1], f"linear2 takes {seen.shape[-1]} features, not attention "
                                                     f"({hidden}) + MLP activation ({act.shape[-1]})")
    _close(act, seen[..., hidden:], "mlp_act(linear1(pre_norm(x) * (1 + scale) + shift)[..., 3 x hidden_size:]) is "
                                    "not the MLP part of linear2's input")


def _no_own_modulation(block, dm) -> None:
    value = getattr(block, "modulation", None)
    expect(not value, f"the block has its own modulation ({type(value).__name__}): it no longer takes it ready-made")


FLUX_CALL_CHECKS_DOUBLE = {
    "input + gate1 * attn.proj + gate2 * mlp = output, per stream": (
        _double_adds_up, "full steps record the branches; cached steps add their forecasts through these gates"),
    "mlp(norm2(x) * (1 + scale2) + shift2) is the MLP branch": (
        _double_mlp_refresh, "cached steps refresh the MLP on one representative token per cluster"),
}
FLUX_CALL_CHECKS_SINGLE = {
    "input + gate * linear2(...) = output": (
        _single_adds_up, "full steps record linear2's output; cached steps add its forecast through this gate"),
}
SINGLE_MLP_SPLIT = {
    "linear2's input = cat(attention, mlp_act(linear1(...)[3 x hidden:]))": (
        _single_mlp_split, "refresh_scope 'all' recomputes the MLP half of a single block on representatives "
                           "(mlp_act also halves linear1's SiLU-gated MLP part: FLUX.2's mlp_silu_act)"),
}


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
    call_checks=FLUX_CALL_CHECKS_DOUBLE,
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
    call_checks={**FLUX_CALL_CHECKS_SINGLE, **SINGLE_MLP_SPLIT},
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

def ready_made_specs(source: str) -> tuple:
    """(double, single) BlockSpecs of FLUX-style blocks built without their own modulation, which take it
    ready-made in the patch's ``vec`` (``source``: where the model computes it)."""
    double = dataclasses.replace(
        FLUX_STYLE_DOUBLE,
        args=dict(FLUX_STYLE_DOUBLE.args, vec=f"the block's modulation, ready-made ({source}): cached steps apply "
                                              "its gates and the MLP's shift / scale"),
        attrs={k: v for k, v in FLUX_STYLE_DOUBLE.attrs.items() if k not in ("modulation", "img_mod", "txt_mod")},
        checks={"modulation is falsy": (_no_own_modulation, "blocks built without modulation take it from vec; "
                                                            "FLUX.2 is told from FLUX.1 by it")},
        call_checks={"args['vec'] = ((ModulationOut img attn, img MLP), (txt attn, txt MLP))": (
            _check_double_vec, "cached steps take the image and text streams' modulations from vec"),
            **FLUX_CALL_CHECKS_DOUBLE})
    single = dataclasses.replace(
        FLUX_STYLE_SINGLE,
        args=dict(FLUX_STYLE_SINGLE.args, vec=f"the block's modulation, ready-made ({source}): cached steps apply "
                                              "its gate"),
        attrs={k: v for k, v in FLUX_STYLE_SINGLE.attrs.items() if k != "modulation"},
        checks={"modulation is None": (_no_own_modulation, "single blocks without modulation take it from vec")},
        call_checks={"args['vec'] = ModulationOut(shift, scale, gate)": (
            _check_single_vec, "cached steps take the single block's modulation from vec"),
            **FLUX_CALL_CHECKS_SINGLE, **SINGLE_MLP_SPLIT})
    return double, single


GLOBAL_DOUBLE, GLOBAL_SINGLE = ready_made_specs("FLUX.2's global modulation: double_stream_modulation_img / _txt, "
                                                "single_stream_modulation")
CHROMA_DOUBLE, CHROMA_SINGLE = ready_made_specs("the approximator's per-block slice, get_modulations(..., idx=i)")


def _yak_single(block, dm) -> None:
    expect(bool(getattr(block, "yak_mlp", False)), f"the single block's yak_mlp is {getattr(block, 'yak_mlp', None)!r}")


YAK_SINGLE = dataclasses.replace(
    FLUX_STYLE_SINGLE,
    checks={"modulation(vec)[0] -> ModulationOut(shift, scale, gate)": FLUX_STYLE_SINGLE.checks[
                "modulation(vec)[0] -> ModulationOut(shift, scale, gate)"],
            "yak_mlp is truthy": (_yak_single, "the yak MLP's activation needs both halves of linear1's MLP part: "
                                               "refresh_scope 'all' leaves these blocks' MLP half cached")},
    call_checks=FLUX_CALL_CHECKS_SINGLE)


def _qwen_streams(s, block, zero_from) -> list:
    """[(name, input, attention branch, ((shift, scale, gate) attention, (shift, scale, gate) MLP) per token)] as
    the pack reads Qwen-Image's modulation: img_mod / txt_mod (B, 6 x dim) = attention then MLP, each shift, scale,
    gate; with a doubled vec (2B rows: timestep-zero references) the text takes the first B rows and the image
    tokens from ``zero_from`` on the last B."""
    vec, img = _part(s, "args", "vec"), _part(s, "in", "img")
    batch = img.shape[0]
    split = vec.shape[0] == 2 * batch
    expect(split == (zero_from is not None),
           f"args['vec'] has {vec.shape[0]} rows for a batch of {batch}: "
           + ("not the doubled (timestep, timestep zero) embedding" if zero_from is not None else "doubled"))
    out = []
    for name, x, attn, mod, start in (("img", img, "attn.to_out.0", block.img_mod(vec), zero_from),
                                      ("txt", _part(s, "in", "txt"), "attn.to_add_out",
                                       block.txt_mod(vec[:batch] if split else vec), None)):
        expect(mod.shape[-1] == 6 * x.shape[-1], f"{name}_mod(vec) gives {tuple(mod.shape)}, not (batch, 6 x "
                                                 f"{x.shape[-1]})")
        parts = [half.chunk(3, dim=-1) for half in mod.unsqueeze(1).chunk(2, dim=-1)]
        if start is not None:
            later = (torch.arange(x.shape[1], device=x.device) >= start)[None, :, None]
            parts = [[torch.where(later, t[batch:], t[:batch]) for t in part] for part in parts]
        out.append((name, x, attn, parts))
    return out


def _qwen_adds_up(s, block, dm, rec, zero_from=None) -> None:
    for name, x, attn, ((_, _, g1), (_, _, g2)) in _qwen_streams(s, block, zero_from):
        _close(x + g1 * _part(s, "branches", attn) + g2 * _part(s, "branches", f"{name}_mlp"), _part(s, "out", name),
               f"args['{name}'] + gate1 * {attn} + gate2 * {name}_mlp is not the block's '{name}' output "
               f"({name}_mod(vec) read as (shift, scale, gate) of the attention, then of the MLP)")


def _qwen_mlp_refresh(s, block, dm, rec, zero_from=None) -> None:
    for name, x, attn, ((_, _, g1), (shift, scale, _)) in _qwen_streams(s, block, zero_from):
        mid = x + g1 * _part(s, "branches", attn)
        h = _attr_path(block, f"{name}_norm2", "Qwen-Image block")(mid) * (1 + scale) + shift
        _close(_attr_path(block, f"{name}_mlp", "Qwen-Image block")(h), _part(s, "branches", f"{name}_mlp"),
               f"{name}_mlp({name}_norm2(x) * (1 + scale2) + shift2), x the stream after the attention update, is not "
               "the block's MLP branch")


QWEN_BLOCK = BlockSpec(
    args={"img": "image stream (target then reference tokens): forecast, the last block clusters it",
          "txt": "text stream: forecast and clustered like the image stream",
          "vec": "temb: cached steps recompute the gates from it; twice the batch with timestep-zero references",
          "pe": "not read by ClusCa: it hands the args dict back to original_block unchanged, whose wrapper reads it",
          "transformer_options": "carries the run's ClusCa holder to the block patch"},
    extra={"original_block": "full steps run ComfyUI's own block through it"},
    returns=("img", "txt"),
    original_returns={"img": "layout self-check and clustering", "txt": "layout self-check and clustering"},
    attrs={"img_mod": "image modulation Linear (6 x dim: shift, scale, gate of attention and MLP)",
           "txt_mod": "text modulation Linear",
           "attn.to_out.0": "image attention output, captured on full steps",
           "attn.to_add_out": "text attention output, captured on full steps",
           "img_mlp": "image MLP: captured on full steps, run on representatives on cached steps",
           "txt_mlp": "text MLP: captured and refreshed like the image one",
           "img_norm2": "image pre-MLP norm for the representatives' refresh",
           "txt_norm2": "text pre-MLP norm for the representatives' refresh"},
    branches={"attn.to_out.0": "image attention branch", "attn.to_add_out": "text attention branch",
              "img_mlp": "image MLP branch", "txt_mlp": "text MLP branch"},
    call_checks={"input + gate1 * attention + gate2 * mlp = output, per stream (img_mod / txt_mod chunking)": (
                     _qwen_adds_up, "cached steps add the forecasts through the gates read from img_mod / txt_mod"),
                 "mlp(norm2(x) * (1 + scale2) + shift2) is the MLP branch": (
                     _qwen_mlp_refresh, "cached steps refresh the MLP on one representative token per cluster")},
)


def _lumina_mods(s, block) -> tuple:
    scale_msa, gate_msa, scale_mlp, gate_mlp = block.adaLN_modulation(_part(s, "args", "adaln_input")).chunk(4, dim=1)
    return scale_msa.unsqueeze(1), gate_msa.unsqueeze(1).tanh(), scale_mlp.unsqueeze(1), gate_mlp.unsqueeze(1).tanh()


def _lumina_adds_up(s, block, dm, rec) -> None:
    _, g1, _, g2 = _lumina_mods(s, block)
    x = _part(s, "in", "x")
    _close(x + g1 * _part(s, "branches", "attention_norm2") + g2 * _part(s, "branches", "ffn_norm2"), s["out"],
           "x + tanh(gate_msa) * attention_norm2(...) + tanh(gate_mlp) * ffn_norm2(...), the gates from "
           "adaLN_modulation(adaln_input).chunk(4) as (scale_msa, gate_msa, scale_mlp, gate_mlp), is not the layer's "
           "output")


def _lumina_ffn_refresh(s, block, dm, rec) -> None:
    _, g1, scale_mlp, _ = _lumina_mods(s, block)
    mid = _part(s, "in", "x") + g1 * _part(s, "branches", "attention_norm2")
    _close(block.ffn_norm2(block.feed_forward(block.ffn_norm1(mid) * (1 + scale_mlp))),
           _part(s, "branches", "ffn_norm2"),
           "ffn_norm2(feed_forward(ffn_norm1(x) * (1 + scale_mlp))), x the stream after the attention update, is not "
           "the layer's feed-forward branch")


def _lumina_stream(s, block, dm, rec) -> None:
    shapes = rec["calls"][0].get("shapes", {})
    x, context = shapes.get("x"), shapes.get("context")
    expect(x is not None and context is not None, f"the model call has no x / context (tensors: {sorted(shapes)})")
    p, multiple = dm.patch_size, getattr(dm, "pad_tokens_multiple", None) or 1
    n_cap, n_img = context[1], math.ceil(x[-2] / p) * math.ceil(x[-1] / p)
    pad = [n + -n % multiple for n in (n_cap, n_img)]
    n = _part(s, "in", "x").shape[1]
    expect(n == sum(pad), f"the layers' stream has {n} tokens, not the caption ({n_cap} tokens, {pad[0]} padded) then "
                          f"the image ({n_img}, {pad[1]} padded)")


def _adaln_first(silu: bool):
    def check(block, dm) -> None:
        first = _attr_path(block, "adaLN_modulation", "layer")[0]
        expect(isinstance(first, torch.nn.SiLU) == silu,
               f"layers[0].adaLN_modulation[0] is a {type(first).__name__}: "
               + ("not the SiLU of Lumina 2's modulation" if silu else "the SiLU Z-Image's modulation does not have"))
    return check


def lumina_layer(z_image: bool) -> BlockSpec:
    return BlockSpec(
        args={}, extra={}, returns=(), original_returns={},
        forward={"x": "the stream (caption then image tokens), the block patch's args['img']",
                 "x_mask": "the attention mask, args['attn_mask'] (handed back to the layer unchanged)",
                 "freqs_cis": "RoPE, args['pe'] (handed back to the layer unchanged)",
                 "adaln_input": "the timestep embedding, args['vec']: cached steps recompute the gates from it",
                 "transformer_options": "carries the run's ClusCa holder: the patch is active only within its calls",
                 "timestep_zero_index": ("token-wise timestep modulation (Z-Image Omni): such calls run in full",
                                         "0.33.0")},
        attrs={"adaLN_modulation": "scale / gate of the attention and the feed-forward on cached steps",
               "attention_norm2": "post-attention norm: its output is the captured attention branch",
               "attention_norm2.normalized_shape": "the cost estimate's width of a branch without a Linear",
               "ffn_norm1": "pre-feed-forward norm for the representatives' refresh",
               "feed_forward": "feed-forward, run on representatives on cached steps",
               "ffn_norm2": "post-feed-forward norm: its output is the captured feed-forward branch"},
        branches={"attention_norm2": "attention branch (after its post-norm)",
                  "ffn_norm2": "feed-forward branch (after its post-norm)"},
        checks={("adaLN_modulation[0] is not a SiLU" if z_image else "adaLN_modulation[0] is a SiLU"): (
            _adaln_first(silu=not z_image), "Z-Image and Lumina 2 (one class, NextDiT) are told apart by it")},
        call_checks={
            "x + tanh(gate_msa) * attention_norm2 + tanh(gate_mlp) * ffn_norm2 = output": (
                _lumina_adds_up, "cached steps add the forecasts through the gates read from adaLN_modulation"),
            "ffn_norm2(feed_forward(ffn_norm1(x) * (1 + scale_mlp))) is the feed-forward branch": (
                _lumina_ffn_refresh, "cached steps refresh the feed-forward on one representative token per cluster"),
            "the stream = caption (padded to pad_tokens_multiple) then image tokens (padded)": (
                _lumina_stream, "the caption and the image tokens are clustered apart (segments from these counts)")},
    )


def _detects(dm, **want) -> None:
    """ComfyUI's own model detection, reading the tiny model's state dict, gives these config values."""
    import comfy.model_detection
    got = comfy.model_detection.detect_unet_config(dm.state_dict(), "")
    wrong = {k: got.get(k, "<missing>") for k, v in want.items() if got.get(k, "<missing>") != v}
    expect(not wrong, f"comfy.model_detection.detect_unet_config gives {wrong} for this checkpoint, not "
                      f"{ {k: want[k] for k in wrong} }")


def _config_has(name: str, **want) -> None:
    config = getattr(_resolve(f"comfy.supported_models:{name}"), "unet_config", {})
    wrong = {k: config.get(k, "<missing>") for k, v in want.items() if config.get(k, "<missing>") != v}
    expect(not wrong, f"supported_models.{name}.unet_config has {wrong}, not { {k: want[k] for k in wrong} }")


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
    Family(
        name="FLUX.2",
        model_class="comfy.ldm.flux.model:Flux",
        make_model=lambda: FLUX_VARIANTS["flux2"].make(0),
        make_cond=lambda seed: FLUX_VARIANTS["flux2"].cond(seed),
        latent=(1, 16, 8, 8),
        forward_params={"x": "latent: batch, image tokens and fingerprint of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "ref_latents": "FLUX.2 edit references: cached with the image tokens",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"params.default_ref_method": "the reference method of calls that set none (FLUX.2 edit "
                                                  "checkpoints and the FluxKVCache node set it)",
                     "params.ref_index_scale": "references take their own timestep only at a non-zero index scale, "
                                               "as the forward decides",
                     "patch_size": "image tokens per latent",
                     "double_blocks": "the double-stream blocks patched as ('double_block', i)",
                     "single_blocks": "the single-stream blocks patched as ('single_block', i)"},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": GLOBAL_DOUBLE, "single_block": GLOBAL_SINGLE},
    ),
    Family(
        name="Chroma",
        model_class="comfy.ldm.chroma.model:Chroma",
        make_model=lambda: FLUX_VARIANTS["chroma"].make(0),
        make_cond=lambda seed: FLUX_VARIANTS["chroma"].cond(seed),
        latent=(1, 16, 16, 16),
        forward_params={"x": "latent: batch, image tokens and fingerprint of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patch_size": "image tokens per latent",
                     "skip_mmdit": "double blocks the model skips (their patches are not called, see the skip entry)",
                     "skip_dit": "single blocks the model skips",
                     "double_blocks": "the double-stream blocks patched as ('double_block', i)",
                     "single_blocks": "the single-stream blocks patched as ('single_block', i)"},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": CHROMA_DOUBLE, "single_block": CHROMA_SINGLE},
    ),
    Family(
        name="Chroma Radiance",
        model_class="comfy.ldm.chroma_radiance.model:ChromaRadiance",
        make_model=lambda: FLUX_VARIANTS["chroma_radiance"].make(0),
        make_cond=lambda seed: FLUX_VARIANTS["chroma_radiance"].cond(seed),
        latent=(1, 3, 32, 32),
        forward_params={"x": "pixels: batch, image tokens (patches) and fingerprint of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patch_size": "image tokens per image (pixel patches)",
                     "skip_mmdit": "double blocks the model skips", "skip_dit": "single blocks the model skips",
                     "double_blocks": "the double-stream blocks patched as ('double_block', i)",
                     "single_blocks": "the single-stream blocks patched as ('single_block', i)"},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": CHROMA_DOUBLE, "single_block": CHROMA_SINGLE},
    ),
    Family(
        name="Ovis-Image",
        model_class="comfy.ldm.flux.model:Flux",
        make_model=lambda: FLUX_VARIANTS["ovis_image"].make(0),
        make_cond=lambda seed: FLUX_VARIANTS["ovis_image"].cond(seed),
        latent=(1, 16, 16, 16),
        forward_params={},
        model_attrs={"params.yak_mlp": "the Ovis-Image entry recognises the model by it (with per-block modulation)",
                     "params.txt_ids_dims": "read with yak_mlp to tell LongCat-Image (no yak MLP) apart",
                     "patch_size": "image tokens per latent"},
        model_checks={"model_detection: yak MLP + text norm -> yak_mlp, txt_norm, txt_ids_dims [1, 2]": (
            lambda dm: _detects(dm, yak_mlp=True, txt_norm=True, txt_ids_dims=[1, 2]),
            "Ovis-Image checkpoints become models whose params the Ovis-Image entry recognises")},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": FLUX_STYLE_DOUBLE, "single_block": YAK_SINGLE},
        since="0.33.0",
    ),
    Family(
        name="LongCat-Image",
        model_class="comfy.ldm.flux.model:Flux",
        make_model=lambda: FLUX_VARIANTS["longcat_image"].make(0),
        make_cond=lambda seed: FLUX_VARIANTS["longcat_image"].cond(seed),
        latent=(1, 16, 16, 16),
        forward_params={},
        model_attrs={"params.txt_ids_dims": "[1, 2] without the yak MLP tells LongCat-Image from FLUX.1",
                     "params.yak_mlp": "must be off for the LongCat-Image entry",
                     "patch_size": "image tokens per latent"},
        model_checks={"supported_models.LongCatImage / model_detection give txt_ids_dims [1, 2], no yak MLP": (
            lambda dm: (_detects(dm, yak_mlp=False, txt_ids_dims=[1, 2], vec_in_dim=None),
                        _config_has("LongCatImage", txt_ids_dims=[1, 2])),
            "LongCat-Image checkpoints become models whose params the LongCat-Image entry recognises")},
        block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": FLUX_STYLE_DOUBLE, "single_block": FLUX_STYLE_SINGLE},
        since="0.33.0",
    ),
    Family(
        name="Qwen-Image",
        model_class="comfy.ldm.qwen_image.model:QwenImageTransformer2DModel",
        make_model=lambda: tiny_qwen_image(0),
        make_cond=lambda seed: qwen_image_cond(seed),
        latent=(1, 16, 1, 16, 16),
        forward_params={"x": "latent: batch, frames and image tokens of the call",
                        "context": "text tokens: their count and the text stream's clusters",
                        "ref_latents": "edit references: cached with the image tokens, after the target ones",
                        "transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patch_size": "token grid of a latent",
                     "transformer_blocks": "the blocks patched as ('double_block', i)"},
        block_lists={"double_block": "transformer_blocks"},
        blocks={"double_block": QWEN_BLOCK},
    ),
    Family(
        name="Z-Image",
        model_class="comfy.ldm.lumina.model:NextDiT",
        make_model=lambda: tiny_lumina(0, "z_image"),
        make_cond=lambda seed: lumina_cond(seed),
        latent=(1, 16, 16, 20),
        forward_params={"x": "latent: batch and image tokens of the call",
                        "context": "caption tokens: their count (padded to pad_tokens_multiple)",
                        "ref_latents": ("Z-Image Omni reference images: such calls run in full", "0.33.0")},
        call_keys={"transformer_options": "the run's ClusCa holder, sigmas and uuids (0.3.75: through **kwargs)"},
        model_attrs={"patch_size": "image tokens per latent",
                     "pad_tokens_multiple": "caption and image token padding (Z-Image: 32; None: none)",
                     "layers": "the main layers, object-patched on their forward"},
        block_lists={"layer": "layers"},
        blocks={"layer": lumina_layer(z_image=True)},
    ),
    Family(
        name="Lumina 2",
        model_class="comfy.ldm.lumina.model:NextDiT",
        make_model=lambda: tiny_lumina(0, "lumina2"),
        make_cond=lambda seed: lumina_cond(seed),
        latent=(1, 16, 16, 20),
        forward_params={},
        model_attrs={"patch_size": "image tokens per latent",
                     "pad_tokens_multiple": "caption and image token padding (None for Lumina 2)",
                     "layers": "the main layers, object-patched on their forward"},
        block_lists={"layer": "layers"},
        blocks={"layer": lumina_layer(z_image=False)},
    ),
    Family(
        name="Z-Image (pixel space)",
        model_class="comfy.ldm.lumina.model:NextDiTPixelSpace",
        make_model=lambda: tiny_lumina(0, "z_image_pixel"),
        make_cond=lambda seed: lumina_cond(seed),
        latent=(1, 3, 32, 40),
        forward_params={"x": "pixels: batch and image tokens (patches) of the call",
                        "context": "caption tokens: their count (padded to pad_tokens_multiple)",
                        "ref_latents": "reference images: such calls run in full"},
        call_keys={"transformer_options": "the run's ClusCa holder, sigmas and uuids"},
        model_attrs={"patch_size": "image tokens per image (pixel patches)",
                     "pad_tokens_multiple": "caption and image token padding",
                     "layers": "the main layers, object-patched on their forward"},
        block_lists={"layer": "layers"},
        blocks={"layer": lumina_layer(z_image=True)},
        since="0.33.0",
    ),
]
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}


def _ref_latent(seed: int, shape: tuple) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


#: probe runs that are not families of their own: edit references with their own timestep (index_timestep_zero)
PROBE_RUNS = {f.name: f for f in (
    Family(
        name="FLUX.2 index_timestep_zero",
        model_class="comfy.ldm.flux.model:Flux",
        make_model=lambda: FLUX_VARIANTS["flux2_klein"].make(0),
        make_cond=lambda seed: with_references(FLUX_VARIANTS["flux2_klein"].cond(seed), [_ref_latent(5, (1, 16, 8, 8))],
                                               "index_timestep_zero"),
        latent=(1, 16, 8, 8), forward_params={}, model_attrs={}, block_lists=FLUX_STYLE_LISTS,
        blocks={"double_block": GLOBAL_DOUBLE, "single_block": GLOBAL_SINGLE}, since="0.33.0"),
    Family(
        name="Qwen-Image Edit 2511 index_timestep_zero",
        model_class="comfy.ldm.qwen_image.model:QwenImageTransformer2DModel",
        make_model=lambda: tiny_qwen_image(0, variant="edit_2511"),
        make_cond=lambda seed: qwen_image_cond(seed, references=[reference_latent(5)]),
        latent=(1, 16, 1, 16, 16), forward_params={}, model_attrs={},
        block_lists={"double_block": "transformer_blocks"}, blocks={"double_block": QWEN_BLOCK}, since="0.33.0"),
)}


@functools.lru_cache(maxsize=None)
def tiny_diffusion_model(name: str):
    return FAMILIES_BY_NAME[name].make_model().model.diffusion_model


def _sampled(name: str, kind: str) -> tuple:
    """(sample, block 0, diffusion model, probe record) of the probe's first call of block 0 of ``kind``."""
    rec = _run(name)
    r = _blocks(name, kind)
    fam = FAMILIES_BY_NAME.get(name) or PROBE_RUNS[name]
    expect(r["sample"] is not None and "out" in r["sample"], f"block 0 of kind '{kind}' never ran through the probe")
    dm = rec["model"]
    return r["sample"], getattr(dm, fam.block_lists[kind])[0], dm, rec


def family_entries(fam: Family, seen: Optional[set] = None) -> list:
    """The entries of one family (``seen``: names already in the table, e.g. the model class several families
    share, which are not repeated)."""
    seen = set() if seen is None else seen
    out = [symbol(fam.model_class, f"{fam.name} adapter: the model class it recognises (type identity)", "class")]
    for p, value in fam.forward_params.items():
        why, version = _why(value)

        def check_param(p=p):
            cls = _resolve(fam.model_class)
            sig = _signature(getattr(cls, "_forward", None) or cls.forward, f"{fam.name} _forward")
            expect(p in sig.parameters, f"{_dotted(fam.model_class)}._forward has no parameter {p!r} (signature {sig})")
        out.append(gated(observed(f"{_dotted(fam.model_class)}._forward parameter {p!r}", f"{fam.name}: {why}",
                                  check_param), version, f"_forward parameter {p!r}"))

    def check_bind():
        calls = _calls(fam.name)
        errors = [c["bind_error"] for c in calls if "bind_error" in c]
        expect(not errors, f"the wrapper's (args, kwargs) do not bind to _forward's signature: {errors[:1]}")
        expect(all(c["is_model"] for c in calls), "executor.class_obj is not the family's diffusion model")
    out.append(observed(f"{fam.name} DIFFUSION_MODEL wrapper (args, kwargs) bind to _forward",
                        f"{fam.name}: the adapter reads the call's inputs by _forward's parameter names", check_bind))
    for key, why in fam.call_keys.items():
        def check_call_key(key=key):
            missing = [sorted(c.get("bound", ())) for c in _calls(fam.name) if key not in c.get("bound", ())]
            expect(not missing, f"a model call has no {key!r}, as a _forward parameter or through **kwargs (it has: "
                                f"{missing[:1]})")
        out.append(observed(f"{fam.name} DIFFUSION_MODEL call has {key!r} (parameter or **kwargs)",
                            f"{fam.name}: {why}", check_call_key))
    for path, value in fam.model_attrs.items():
        why, version = _why(value)

        def check_attr(path=path):
            _attr_path(tiny_diffusion_model(fam.name), path, type(tiny_diffusion_model(fam.name)).__name__)
        out.append(gated(observed(f"{fam.name} model.{path}", f"{fam.name}: {why}", check_attr), version,
                         f"model attribute {path}"))
    for label, (fn, why) in fam.model_checks.items():
        def check_model(fn=fn):
            with torch.no_grad():
                fn(tiny_diffusion_model(fam.name))
        out.append(observed(f"{fam.name} model: {label}", f"{fam.name}: {why}", check_model))

    for kind, spec in fam.blocks.items():
        blocks = fam.block_lists[kind]
        if spec.forward is None:
            where = f"{fam.name} patches_replace['dit'][('{kind}', i)]"
        else:
            where = f"{fam.name} object patch on {blocks}[i].forward"

        def check_called(kind=kind, forward=spec.forward is not None):
            dm = tiny_diffusion_model(fam.name)
            count = len(getattr(dm, fam.block_lists[kind]))
            seen_indices = _blocks(fam.name, kind)["indices"]
            how = (f"no longer calls every one of its {fam.block_lists[kind]} through nn.Module.__call__ (the "
                   "object-patched forward)" if forward else
                   f"no longer looks up patches_replace['dit'][('{kind}', i)] for every block")
            expect(seen_indices == set(range(count)),
                   f"the model called the patch for blocks {sorted(seen_indices)} of {count}: ComfyUI {how}")
        out.append(observed(f"{where} is called for every block",
                            f"{fam.name}: ClusCa runs every block through its patch (full and cached steps)",
                            check_called))

        def check_marker(kind=kind, forward=spec.forward is not None):
            r = _blocks(fam.name, kind)
            what = "the forward's transformer_options" if forward else "args['transformer_options']"
            expect(bool(r["marker"]) and all(r["marker"]), f"{what} is not (always) the run's transformer_options "
                                                           f"({sum(r['marker'])} of {len(r['marker'])} calls carry a "
                                                           "key set by the OUTER_SAMPLE wrapper)")
        out.append(observed(f"{where} gets the run's transformer_options",
                            f"{fam.name}: the block patch finds the run's ClusCa holder there", check_marker))
        if spec.forward is not None:
            for p, value in spec.forward.items():
                why, version = _why(value)

                def check_forward_param(kind=kind, p=p):
                    r = _blocks(fam.name, kind)
                    expect(r["bind_error"] is None, f"the layer's call does not bind to type(layer).forward's "
                                                    f"signature: {r['bind_error']}")
                    expect(p in r["args"], f"the layer is called without {p!r} (its forward's arguments: "
                                           f"{sorted(r['args'])})")
                out.append(gated(observed(f"{fam.name} {blocks}[i].forward(..., {p}=...)", f"{fam.name}: {why}",
                                          check_forward_param), version, f"layer forward parameter {p!r}"))

            def check_forward_returns(kind=kind):
                returned = _blocks(fam.name, kind)["returned"]
                expect(returned == {"Tensor"}, f"the layer's forward returns {sorted(returned)}, not the stream tensor")
            out.append(observed(f"{fam.name} {blocks}[i].forward returns the stream (a tensor)",
                                f"{fam.name}: the forward patch returns the block patch's 'img' in its place",
                                check_forward_returns))
        for part, keys in (("args", spec.args), ("extra", spec.extra)):
            for key, why in keys.items():
                def check_key(kind=kind, part=part, key=key):
                    seen_keys = _blocks(fam.name, kind)[part]
                    expect(key in seen_keys, f"{part} has no key {key!r} (it has: {sorted(seen_keys)})")
                out.append(observed(f"{where} {part}[{key!r}]", f"{fam.name}: {why}", check_key))
        for key, why in spec.original_returns.items():
            def check_out(kind=kind, key=key):
                seen_keys = _blocks(fam.name, kind)["out"]
                expect(key in seen_keys, f"extra['original_block'](args) returns no {key!r} (it returns: "
                                         f"{sorted(seen_keys)})")
            out.append(observed(f"{where} original_block(args)[{key!r}]", f"{fam.name}: {why}", check_out))

        if spec.forward is None:
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
                seen_hooks = _blocks(fam.name, kind)["hooks"]
                expect(path in seen_hooks, f"running the block did not call its submodule {path!r} (forward hooks "
                                           f"fired on: {sorted(seen_hooks)})")
            out.append(observed(f"{fam.name} {kind}.{path} runs inside the block",
                                f"{fam.name}: full steps capture the {why} with a forward hook", check_branch))
        for label, (fn, why) in spec.checks.items():
            def check_behaviour(kind=kind, fn=fn):
                dm = tiny_diffusion_model(fam.name)
                with torch.no_grad():
                    fn(getattr(dm, fam.block_lists[kind])[0], dm)
            out.append(observed(f"{fam.name} {kind}.{label}", f"{fam.name}: {why}", check_behaviour))
        for label, (fn, why) in spec.call_checks.items():
            def check_call(kind=kind, fn=fn):
                s, block, dm, rec = _sampled(fam.name, kind)
                with torch.inference_mode():
                    fn(s, block, dm, rec)
            out.append(observed(f"{fam.name} {kind}: {label}", f"{fam.name}: {why}", check_call))
    out = [gated(e, fam.since, f"{fam.name} models") for e in out if e.name not in seen]
    seen.update(e.name for e in out)
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
    params("comfy_api.latest:io.Schema", "Apply ClusCa (the original node) is marked deprecated in the node list",
           keywords=["is_deprecated"]),
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


# -- edit references with their own timestep (index_timestep_zero, ComfyUI 0.33) ---------------------------

TZERO_FLUX = "FLUX.2 index_timestep_zero"
TZERO_QWEN = "Qwen-Image Edit 2511 index_timestep_zero"


def _target_tokens(rec: dict, dm) -> int:
    """Target image tokens of the probe's model calls (the image stream's reference tokens come after them)."""
    x = rec["calls"][0]["shapes"]["x"]
    p = dm.patch_size
    return (x[2] if len(x) == 5 else 1) * math.ceil(x[-2] / p) * math.ceil(x[-1] / p)


def _rows_of(dims, n: int) -> list:
    rows = [None] * n
    for start, end, row in dims or ():
        for t in range(start, min(end, n)):
            rows[t] = row
    return rows


def _check_flux_tzero_rows():
    s, block, dm, rec = _sampled(TZERO_FLUX, "double_block")
    batch = _part(s, "in", "img").shape[0]
    (img1, img2), (txt1, txt2) = _double_mods(block, _part(s, "args", "vec"))
    for what, m, rows in (("image attention", img1, 2), ("image MLP", img2, 2), ("text attention", txt1, 1),
                          ("text MLP", txt2, 1)):
        expect(m.shift.ndim == 3 and tuple(m.shift.shape[:2]) == (batch, rows),
               f"the double blocks' {what} modulation has shape {tuple(m.shift.shape)}, not ({batch}, {rows}, D)")
    s1, block1, _, _ = _sampled(TZERO_FLUX, "single_block")
    mod = _single_mod(block1, _part(s1, "args", "vec"))
    expect(mod.shift.ndim == 3 and tuple(mod.shift.shape[:2]) == (batch, 2),
           f"the single blocks' modulation has shape {tuple(mod.shift.shape)}, not ({batch}, 2, D)")


def _check_flux_tzero_dims():
    s, _, dm, rec = _sampled(TZERO_FLUX, "double_block")
    n_target, n_txt = _target_tokens(rec, dm), _part(s, "in", "txt").shape[1]
    s1 = _sampled(TZERO_FLUX, "single_block")[0]
    for kind, sample_, key, start in (("double", s, "modulation_dims_img", n_target),
                                      ("single", s1, "modulation_dims", n_txt + n_target)):
        n = _part(sample_, "in", "img").shape[1]
        dims = sample_["kwargs"].get(key)
        expect(_rows_of(dims, n) == [int(t >= start) for t in range(n)],
               f"the {kind} block got {key}={dims!r} (its keyword arguments: {sorted(sample_['kwargs'])}): not row 0 "
               f"for the first {start} tokens and row 1 for the {n - start} reference tokens after them")


def _check_flux_tzero_double():
    s, block, dm, rec = _sampled(TZERO_FLUX, "double_block")
    with torch.inference_mode():
        _double_adds_up(s, block, dm, rec, zero_from=_target_tokens(rec, dm))
        _double_mlp_refresh(s, block, dm, rec, zero_from=_target_tokens(rec, dm))


def _check_flux_tzero_single():
    s, block, dm, rec = _sampled(TZERO_FLUX, "single_block")
    n_txt = _sampled(TZERO_FLUX, "double_block")[0]["in"]["txt"].shape[1]
    with torch.inference_mode():
        _single_adds_up(s, block, dm, rec, zero_from=n_txt + _target_tokens(rec, dm))


def _check_qwen_tzero(fn):
    def check():
        s, block, dm, rec = _sampled(TZERO_QWEN, "double_block")
        with torch.inference_mode():
            fn(s, block, dm, rec, zero_from=_target_tokens(rec, dm))
    return check


TIMESTEP_ZERO = [
    gated(entry, "0.33.0", "index_timestep_zero references with their own timestep") for entry in (
        params("comfy.ldm.flux.model:Flux.forward_orig", "flux_layers.supports_timestep_zero: where forward_orig takes "
               "it, index_timestep_zero references have their own timestep (cached with per-token modulation on "
               "FLUX.2, computed in full on FLUX.1 / Ovis / LongCat)", keywords=["timestep_zero_index"]),
        observed("FLUX.2 index_timestep_zero: global modulation of the image stream and the single blocks has two "
                 "rows per batch row (B, 2, D), the text stream's one",
                 "FLUX.2 edit references with their own timestep are cached with per-token modulation "
                 "(flux_layers: TIMESTEP_ZERO_FROM)", _check_flux_tzero_rows),
        observed("FLUX.2 index_timestep_zero: modulation_dims_img / modulation_dims give row 0 to the target image "
                 "(and text) tokens, row 1 to the reference tokens after them",
                 "cached steps apply the rows per token from the same boundaries: the target image tokens in the "
                 "image stream, text + target image tokens in the single blocks' stream", _check_flux_tzero_dims),
        observed("FLUX.2 index_timestep_zero double block: input + per-token gate1 * attn.proj + per-token gate2 * "
                 "mlp = output, per stream; the MLP refresh with per-token shift / scale",
                 "full steps record the (ungated) branches; cached steps add them through the per-token gates",
                 _check_flux_tzero_double),
        observed("FLUX.2 index_timestep_zero single block: input + per-token gate * linear2(...) = output",
                 "cached steps add linear2's forecast through the per-token gate", _check_flux_tzero_single),
        observed("Qwen-Image index_timestep_zero: temb has 2B rows; the image tokens from the target's count on "
                 "take its second half, the text its first (gates add up to the block's output)",
                 "Qwen-Image Edit 2511 references are cached with per-token modulation",
                 _check_qwen_tzero(_qwen_adds_up)),
        observed("Qwen-Image index_timestep_zero: the MLP refresh with per-token shift / scale",
                 "cached steps refresh the image MLP of reference tokens with their own modulation",
                 _check_qwen_tzero(_qwen_mlp_refresh)),
    )
]


# -- Chroma: blocks the model skips --------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def chroma_skip_probe(variant: str) -> dict:
    """One step of a tiny Chroma (Radiance) model with skip_mmdit [1] and skip_dit [0] (object patches, as
    ComfyUI's own nodes set them), recording which block patches the model called."""
    v = FLUX_VARIANTS[variant]
    m = v.make(0).clone()
    dm = m.model.diffusion_model
    rec = {"called": set(), "error": None}
    for kind, blocks in (("double_block", dm.double_blocks), ("single_block", dm.single_blocks)):
        for i in range(len(blocks)):
            def patch(args, extra, key=(kind, i)):
                rec["called"].add(key)
                return extra["original_block"](args)
            m.set_model_patch_replace(patch, "dit", kind, i)
    m.add_object_patch("diffusion_model.skip_mmdit", [1])
    m.add_object_patch("diffusion_model.skip_dit", [0])
    try:
        sample(m, v.cond(1), v.cond(1), steps=1, cfg=1.0, latent=v.latent())
    except Exception as exc:  # noqa: BLE001 - the entry reports it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def _check_chroma_skip(variant: str):
    def check():
        rec = chroma_skip_probe(variant)
        if rec["error"]:
            raise ContractBroken(f"sampling a tiny {variant} model with skipped blocks failed: {rec['error']}")
        want = {("double_block", 0), ("single_block", 1)}
        expect(rec["called"] == want, f"with skip_mmdit [1] and skip_dit [0] the model called the block patches "
                                      f"{sorted(rec['called'])}, not {sorted(want)}")
    return check


CHROMA_SKIP = [
    observed(f"{FLUX_VARIANTS[v].name} skip_mmdit / skip_dit: the skipped blocks' patches are not called",
             f"{FLUX_VARIANTS[v].name}: skipped blocks are left alone; the last double block that ran is clustered",
             _check_chroma_skip(v)) for v in ("chroma", "chroma_radiance")
]


# -- the generic block forecast (nodes/adapters/generic.py) -------------------------------------------

#: the patches_replace["dit"] key kinds the generic forecast finds in these models' code (ComfyUI's source)
GENERIC_KINDS = {"SD3": ("double_block",), "AuraFlow": ("double_block", "single_block"),
                 "Hunyuan3Dv2": ("double_block", "single_block")}


@functools.lru_cache(maxsize=None)
def generic_probe(name: str) -> dict:
    """Two steps of a tiny model the pack has no description for, with an APPLY_MODEL wrapper and, as the generic
    forecast installs them, patches for every detected key kind times the longest block list."""
    gm = next(g for g in GENERIC_MODELS if g.name == name)
    generic = pack_module("nodes.adapters.generic")
    m = gm.make(0).clone()
    dm = m.model.diffusion_model
    rec = {"kinds": generic.patch_kinds(dm), "class": type(dm), "calls": [], "apply": [], "error": None}

    def block_patch(kind, i):
        def patch(args, extra):
            to = args.get("transformer_options")
            inputs = {k: tuple(v.shape) for k, v in args.items() if isinstance(v, torch.Tensor)}
            out = extra["original_block"](args)
            shapes = ({k: None if v is None else tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                       for k, v in out.items()} if isinstance(out, dict) else type(out).__name__)
            rec["calls"].append({"key": (kind, i), "marker": isinstance(to, dict) and bool(to.get(MARKER)),
                                 "inputs": inputs, "out": shapes})
            return out
        return patch

    def apply(executor, *args, **kwargs):
        base = executor.class_obj
        info = {"class": type(base).__name__, "dm": getattr(base, "diffusion_model", None) is dm}
        try:
            bound = _bind(base, args, kwargs, "_apply_model")
            to = bound.get("transformer_options") or {}
            info.update(x=isinstance(bound.get("x"), torch.Tensor), marker=bool(to.get(MARKER)),
                        sigmas=isinstance(to.get("sigmas"), torch.Tensor), uuids=bool(to.get("uuids")))
        except TypeError as exc:
            info["bind_error"] = str(exc)
        rec["apply"].append(info)
        return executor(*args, **kwargs)

    try:
        for kind in rec["kinds"]:
            for i in range(generic.longest_block_list(dm)):
                m.set_model_patch_replace(block_patch(kind, i), "dit", kind, i)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "contract", apply)
        m.model_options.setdefault("transformer_options", {})[MARKER] = True
        sample(m, gm.cond(1), gm.cond(2), steps=2, cfg=2.0, latent=gm.latent())
    except Exception as exc:  # noqa: BLE001 - the entries report it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def _generic(name: str) -> dict:
    rec = generic_probe(name)
    if rec["error"]:
        raise ContractBroken(f"the {name} probe run (tiny model, comfy.sample, cfg 2) failed: {rec['error']}")
    return rec


def _check_generic_kinds(name: str):
    def check():
        rec = generic_probe(name)
        want = GENERIC_KINDS[name]
        expect(tuple(rec["kinds"]) == want, f"the source of {rec['class'].__module__}.{rec['class'].__name__} (and its "
                                            f"submodules) has block patch lookups {rec['kinds']}, not {want}")
    return check


def _check_generic_apply(name: str):
    def check():
        calls = _generic(name)["apply"]
        expect(bool(calls), "the APPLY_MODEL wrapper was never called")
        errors = [c["bind_error"] for c in calls if "bind_error" in c]
        expect(not errors, f"the APPLY_MODEL wrapper's (args, kwargs) do not bind to BaseModel._apply_model: "
                           f"{errors[:1]}")
        bad = [c for c in calls if not (c["dm"] and c["x"] and c["marker"] and c["sigmas"] and c["uuids"])]
        expect(not bad, f"an APPLY_MODEL call is not (executor.class_obj = the BaseModel holding the diffusion model, "
                        f"x, transformer_options with the run's keys, sigmas and uuids): {bad[:1]}")
    return check


def _check_generic_patches(name: str):
    def check():
        rec = _generic(name)
        called = {c["key"][0] for c in rec["calls"]}
        expect(called == set(rec["kinds"]), f"the model called the patches of kinds {sorted(called)}, not of every "
                                            f"detected kind {sorted(rec['kinds'])}")
        expect(all(c["marker"] for c in rec["calls"]), "a block patch's args['transformer_options'] is not the run's")
    return check


def _check_generic_streams(name: str):
    def check():
        for c in _generic(name)["calls"]:
            out = c["out"]
            expect(isinstance(out, dict), f"{c['key']}: original_block(args) returns a {out}, not a dict of streams")
            streams = {k: v for k, v in out.items() if v is not None}
            wrong = {k: v for k, v in streams.items() if c["inputs"].get(k) != v}
            expect(bool(streams) and not wrong, f"{c['key']}: original_block(args) returns {out}; not its batched "
                                                f"tensor args {c['inputs']} with their shapes (or None)")
    return check


GENERIC = [e for gm in GENERIC_MODELS for e in (
    observed(f"generic block forecast: {gm.name}'s code looks up patches_replace['dit'][(kind, i)] for "
             f"{', '.join(GENERIC_KINDS[gm.name])}",
             f"the generic forecast installs patches for the key kinds it finds in the model's source (the {gm.name} "
             "model is offered the forecast)", _check_generic_kinds(gm.name)),
    observed(f"generic block forecast: {gm.name} APPLY_MODEL executor.class_obj / _apply_model(x, transformer_options)",
             "the per-call plan reads the latent and the run's sigmas / uuids / holder there",
             _check_generic_apply(gm.name)),
    observed(f"generic block forecast: {gm.name} patches of every detected kind get the run's transformer_options",
             "the block patch finds the run's ClusCa holder in args['transformer_options']",
             _check_generic_patches(gm.name)),
    observed(f"generic block forecast: {gm.name} blocks return their batched tensor args (shapes kept) or None",
             "cached steps return each stream's forecast update under the same key (the self-check's layout rule)",
             _check_generic_streams(gm.name)),
)]


# -- ModelPatcher: object patches, clones, multi-GPU copies --------------------------------------------------

@functools.lru_cache(maxsize=None)
def object_patch_probe() -> dict:
    """A tiny Z-Image sampled (one step) with an object patch on layers.0.forward and an ON_DETACH callback, then
    unloaded: what ComfyUI did with the attribute while loaded and after."""
    m = tiny_lumina(0, "z_image").clone()
    layer = m.model.diffusion_model.layers[0]
    rec = {"calls": 0, "during": [], "detach": [], "error": None}

    def forward(*args, **kwargs):
        rec["calls"] += 1
        return type(layer).forward(layer, *args, **kwargs)
    try:
        m.add_object_patch("diffusion_model.layers.0.forward", forward)
        rec["stored"] = m.object_patches.get("diffusion_model.layers.0.forward") is forward
        m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, "contract",
                                lambda *a: rec["detach"].append((a[0] is m,) + a[1:]))
        sample(m, lumina_cond(1), lumina_cond(1), steps=1, cfg=1.0, latent=lumina_latent(),
               callback=lambda *a: rec["during"].append(vars(layer).get("forward") is forward))
        comfy.model_management.unload_all_models()
    except Exception as exc:  # noqa: BLE001 - the entries report it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    left = vars(layer).get("forward")
    rec["left"] = ("none" if "forward" not in vars(layer) else "bound" if left == type(layer).forward.__get__(layer)
                   else repr(left))
    return rec


def _object_patch() -> dict:
    rec = object_patch_probe()
    if rec["error"]:
        raise ContractBroken(f"sampling and unloading a tiny Z-Image with an object patch failed: {rec['error']}")
    return rec


def _check_object_patch_applied():
    rec = _object_patch()
    expect(rec["stored"], "add_object_patch(key, obj) does not store obj in ModelPatcher.object_patches[key]")
    expect(bool(rec["during"]) and all(rec["during"]), "while the model sampled, layers[0].forward was not the "
                                                       "object patch")
    expect(rec["calls"] > 0, "the object-patched forward was never called (nn.Module.__call__ did not use it)")


def _check_object_patch_restored():
    left = _object_patch()["left"]
    expect(left in ("none", "bound"), f"after unloading, layers[0] keeps forward = {left}, not its class's forward")


def _check_on_detach():
    detach = _object_patch()["detach"]
    expect(bool(detach), "unloading the model called no ON_DETACH callback")
    expect(all(len(a) == 2 and a[0] and a[1] is True for a in detach),
           f"ON_DETACH callbacks got {detach}, not (the patcher, unpatch_all=True)")


class _Copyable:
    """An object in transformer_options that knows how it is deep-copied (like the pack's holder and patches)."""

    def __init__(self, copied=False):
        self.copied = copied

    def __deepcopy__(self, memo):
        return _Copyable(True)


@functools.lru_cache(maxsize=None)
def clone_semantics_probe() -> dict:
    m = tiny_flux(0)
    obj, fn = _Copyable(), (lambda *a: None)
    m.model_options.setdefault("transformer_options", {})["clusca_contract"] = obj
    m.set_model_patch_replace(fn, "dit", "double_block", 0)
    m.add_object_patch("diffusion_model.double_blocks.0.forward", fn)
    c = m.clone()
    to, c_to = m.model_options["transformer_options"], c.model_options.get("transformer_options") or {}
    got = c_to.get("clusca_contract")
    rec = {"own_dict": c_to is not to, "kept": isinstance(got, _Copyable) and (got is obj or got.copied),
           "got": type(got).__name__, "object_patches": c.object_patches is not m.object_patches
           and c.object_patches.get("diffusion_model.double_blocks.0.forward") is fn}
    c.set_model_patch_replace(fn, "dit", "double_block", 1)
    c_to["clusca_contract"] = "replaced"
    c.object_patches["diffusion_model.double_blocks.1.forward"] = fn
    rec["original_patches"] = sorted(to.get("patches_replace", {}).get("dit", {}))
    rec["original_obj"] = to.get("clusca_contract") is obj
    rec["original_object_patches"] = sorted(m.object_patches)
    return rec


def _check_clone_transformer_options():
    r = clone_semantics_probe()
    expect(r["own_dict"], "clone().model_options['transformer_options'] is the original's dict")
    expect(r["kept"], f"an object in transformer_options became a {r['got']} in the clone (neither the same object "
                      "nor its __deepcopy__)")
    expect(r["original_obj"], "replacing an object in the clone's transformer_options replaced it in the original's")


def _check_clone_patches_replace():
    r = clone_semantics_probe()
    expect(r["original_patches"] == [("double_block", 0)], f"a block patch set on the clone shows in the original's "
                                                           f"patches_replace['dit'] (it has {r['original_patches']})")


def _check_clone_object_patches():
    r = clone_semantics_probe()
    expect(r["object_patches"], "clone().object_patches is not its own dict holding the original's object patches")
    expect(r["original_object_patches"] == ["diffusion_model.double_blocks.0.forward"],
           f"an object patch set on the clone shows in the original's object_patches ({r['original_object_patches']})")


SECOND_DEVICE = torch.device("cpu", 1)
SHARED_KEY = "clusca_contract_shared"


@functools.lru_cache(maxsize=None)
def multigpu_probe() -> dict:
    """ComfyUI 0.33's multi-GPU CFG split on CPU (a second "device" cpu:1), set up as
    ``comfy.multigpu.create_multigpu_deepclones`` does, from a tiny FLUX.1 whose cached_patcher_init is a recording
    factory; two steps with cfg 2 record, per model call, the thread, its device, the model copy and whether an
    object set in transformer_options is the same object in every thread. Also clone(force_deepcopy=True)."""
    rec = {"calls": [], "clones": [], "factory": [], "error": None, "lock": threading.Lock()}

    def factory(*args, **kwargs):
        rec["factory"].append((args, dict(kwargs)))
        return tiny_flux(0)

    def wrapper(executor, *args, **kwargs):
        to = _bind(executor.class_obj, args, kwargs).get("transformer_options") or {}
        with rec["lock"]:
            rec["calls"].append({"thread": threading.get_ident(), "device": str(to.get("multigpu_thread_device")),
                                 "model": id(executor.class_obj), "shared": to.get(SHARED_KEY) is shared})
        return executor(*args, **kwargs)

    shared = _Copyable()
    try:
        multigpu = importlib.import_module("comfy.multigpu")
        base = tiny_flux(0)
        base.cached_patcher_init = (factory, (0,))
        base.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, "contract",
                                   lambda original, clone: rec["clones"].append(clone.model is not original.model))
        m = base.clone()
        m.model_options.setdefault("transformer_options", {})[SHARED_KEY] = shared
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "contract", wrapper)
        extra = base.deepclone_multigpu(new_load_device=SECOND_DEVICE)
        rec["deepclone"] = {"fresh_model": extra.model is not base.model, "device": str(extra.load_device)}
        extra.is_multigpu_base_clone = True
        m.set_additional_models("multigpu", [extra])
        m.match_multigpu_clones()
        multigpu.GPUOptionsGroup().register(m)
        sample(m, flux_cond(1), flux_cond(2), steps=2, cfg=2.0, latent=torch.zeros(1, 16, 8, 8))
        base.clone(force_deepcopy=True)
    except Exception as exc:  # noqa: BLE001 - the entries report it
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def _multigpu() -> dict:
    rec = multigpu_probe()
    if rec["error"]:
        raise ContractBroken(f"the multi-GPU split of a tiny FLUX.1 over cpu and cpu:1 failed: {rec['error']}")
    return rec


def _check_factory_calls():
    calls = _multigpu()["factory"]
    expect(len(calls) >= 2, f"the cached_patcher_init factory was called {len(calls)} times for deepclone_multigpu "
                            "and clone(force_deepcopy=True)")
    expect(calls[0] == ((0,), {}), f"deepclone_multigpu called the factory as (*{calls[0][0]}, **{calls[0][1]}), not "
                                   "with the registered arguments only")
    expect(calls[-1] == ((0,), {"disable_dynamic": True}),
           f"clone(force_deepcopy=True) called the factory as (*{calls[-1][0]}, **{calls[-1][1]}), not with the "
           "registered arguments and disable_dynamic=True")


def _check_deepclone_on_clone():
    rec = _multigpu()
    expect(rec["deepclone"]["fresh_model"] and rec["deepclone"]["device"] == str(SECOND_DEVICE),
           f"deepclone_multigpu(new_load_device=cpu:1) gave {rec['deepclone']}, not a fresh model on cpu:1")
    expect(any(rec["clones"]), "no ON_CLONE callback saw a clone holding another model copy (deepclone_multigpu / "
                               "match_multigpu_clones no longer go through clone(model_override=...))")


def _check_multigpu_threads():
    calls = _multigpu()["calls"]
    devices = {c["device"] for c in calls}
    expect(devices == {"cpu", "cpu:1"}, f"transformer_options['multigpu_thread_device'] took the values "
                                        f"{sorted(devices)}, not cpu and cpu:1")
    by_device = {d: {(c["thread"], c["model"]) for c in calls if c["device"] == d} for d in devices}
    expect(all(len(v) == 1 for v in by_device.values()) and len({v for s in by_device.values() for v in s}) == 2,
           f"the devices' calls ran in threads / on model copies {by_device}, not one thread and one copy per device")


def _check_multigpu_shared():
    calls = _multigpu()["calls"]
    expect(bool(calls) and all(c["shared"] for c in calls), "an object set in the model's transformer_options is not "
                                                            "the same object in every thread's model calls")


MULTIGPU = [gated(e, "0.33.0", "multi-GPU CFG split (comfy.multigpu)") for e in (
    symbol("comfy.multigpu:GPUOptionsGroup", "tests: the multi-GPU split is set up as create_multigpu_deepclones "
           "does it", "class"),
    params("comfy.model_patcher:ModelPatcher.deepclone_multigpu", "tests: a model copy per device (the reference "
           "loader's and the tiny models' cached_patcher_init make it)", keywords=["new_load_device"]),
    params("comfy.model_patcher:ModelPatcher.set_additional_models", "tests: the copies registered as 'multigpu' "
           "additional models", positional=2),
    symbol("comfy.model_patcher:ModelPatcher.match_multigpu_clones", "tests: the copies matched to the patched "
           "model", "callable"),
    observed("ModelPatcher.cached_patcher_init = (factory, args): factory(*args) for deepclone_multigpu, "
             "factory(*args, disable_dynamic=True) for clone(force_deepcopy / disable_dynamic)",
             "the reference loader registers reload_reference_model(path, dtype, disable_dynamic=False) so reference "
             "models can be copied per device", _check_factory_calls),
    observed("deepclone_multigpu: a fresh model on the new device, ON_CLONE(original, clone) with clone.model another "
             "copy", "forward patches (Z-Image / Lumina 2) are rebound to the copy's layers in ON_CLONE "
             "(forward_patch._follow_the_model)", _check_deepclone_on_clone),
    observed("multi-GPU split: one thread and one model copy per device, transformer_options['multigpu_thread_device']",
             "ClusCa keeps one plan per thread (RunState); the tests check each conditioning ran on its device",
             _check_multigpu_threads),
    observed("multi-GPU split: every thread's transformer_options hold the same objects",
             "all threads share the run's ClusCa holder (one schedule, shared decisions under its lock)",
             _check_multigpu_shared),
)]


MODEL_PATCHER = [
    params("comfy.model_patcher:ModelPatcher.add_object_patch", "Z-Image / Lumina 2: each layer's forward is replaced "
           "by an object patch ('diffusion_model.layers.<i>.forward', patch)", positional=2),
    observed("add_object_patch(key, obj): object_patches[key] is obj, and while the model is loaded the layer's "
             "forward is obj (nn.Module.__call__ runs it)",
             "Z-Image / Lumina 2: the ClusCa forward patch sees every layer call; ClusCa finds its own and other "
             "nodes' object patches in object_patches (one already on a layer's forward is kept)",
             _check_object_patch_applied),
    observed("unpatch restores the object-patched attribute (after unload: the class's forward)",
             "a model ClusCa patched is exactly as before once unloaded (forward_patch._drop_restored_forward removes "
             "the bound copy ComfyUI puts back)", _check_object_patch_restored),
    symbol("comfy.patcher_extension:CallbacksMP.ON_DETACH", "forward patches: the restored forward is tidied up"),
    observed("ON_DETACH callback(patcher, unpatch_all) when the model is unloaded",
             "forward_patch._drop_restored_forward runs on it", _check_on_detach),
    params("comfy.utils:get_attr", "forward patches: the layer at 'diffusion_model.layers.<i>' of a model copy",
           positional=2),
    observed("clone(): transformer_options is the clone's own dict; other objects in it are shared or deep-copied",
             "own_holder_on_clone gives a clone its own holder without touching the original's (0.33 shares such "
             "objects, 0.3.75 deep-copies them)", _check_clone_transformer_options),
    observed("clone(): patches_replace['dit'] is the clone's own", "Apply ClusCa patches its clone's blocks, never "
             "the model it was given", _check_clone_patches_replace),
    observed("clone(): object_patches is the clone's own dict with the original's patches",
             "forward patches travel with clones; ON_CLONE rebinds the clone's entries only",
             _check_clone_object_patches),
]


# -- the devkit's training path, compat, misc -------------------------------------------------------------

def _check_in_training():
    import comfy.ldm.flux.math as flux_math
    from comfy.ldm.flux.layers import EmbedND
    mm = comfy.model_management
    expect(isinstance(getattr(mm, "in_training", None), bool),
           f"comfy.model_management.in_training is {getattr(mm, 'in_training', '<missing>')!r}, not a bool")
    oop_blocks = importlib.import_module("devkit.oop_blocks")
    q = torch.randn(1, 2, 6, 8, requires_grad=True)
    ids = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)
    pe = EmbedND(dim=8, theta=10000, axes_dim=[8])(ids)
    with oop_blocks.training_mode():
        try:
            out = flux_math.apply_rope(q, q, pe)
            (out[0].sum() + out[1].sum()).backward()
        except Exception as exc:  # noqa: BLE001
            raise ContractBroken(f"with in_training set, apply_rope has no backward ({type(exc).__name__}: {exc})")
    expect(q.grad is not None, "with in_training set, apply_rope's output does not depend on q differentiably")


def _oop_attr(kind: str, path: str):
    def check():
        dm = tiny_diffusion_model(FAMILIES[0].name)
        _attr_path(getattr(dm, FLUX_STYLE_LISTS[kind])[0], path, f"{kind} 0")
    return check


def _check_version_fields(module: str, cls: str):
    def check():
        params_cls = _resolve(f"{module}:{cls}")
        expect(dataclasses.is_dataclass(params_cls), f"{module}.{cls} is no longer a dataclass")
    return check


def _version_fields_entries() -> list:
    by_class: dict = {}
    for image_model, (module, cls, defaults) in pack_module("nodes.compat").VERSION_FIELDS.items():
        by_class.setdefault((module, cls), []).append((image_model, sorted(defaults)))
    return [observed(f"{module}.{cls} is a dataclass",
                     "nodes/compat.py adds / drops the version-dependent config fields of "
                     + "; ".join(f"'{m}' ({', '.join(f)})" for m, f in models) + " by its dataclass fields",
                     _check_version_fields(module, cls)) for (module, cls), models in by_class.items()]


def _check_sigma_max():
    info = _outer(SAMPLER_FAMILY)[0]
    top = info["sigma_max"]
    expect(not isinstance(top, Exception), f"executor.class_obj.model_patcher.model.model_sampling.sigma_max failed: "
                                           f"{top!r}")
    first = float(info["sigmas"][0])
    expect(abs(first - top) <= 1e-4 * top, f"a full 3-step schedule starts at {first}, not at model_sampling.sigma_max "
                                           f"= {top}")


def _check_cond_or_uncond():
    for c in _calls(SAMPLER_FAMILY):
        kinds = c.get("cond_or_uncond")
        expect(isinstance(kinds, (list, tuple)) and len(kinds) == len(c["uuids"]) and set(kinds) <= {0, 1},
               f"transformer_options['cond_or_uncond'] is {kinds!r} for uuids {c['uuids']!r}: not one 0 (cond) / 1 "
               "(uncond) per uuid")


def _check_latent_format(cls: str):
    def check():
        fmt = _resolve(f"comfy.supported_models:{cls}.latent_format")()
        missing = [m for m in ("process_in", "process_out") if not callable(getattr(fmt, m, None))]
        expect(not missing, f"{cls}.latent_format() (a {type(fmt).__name__}) has no {missing}")
    return check


def _check_inference_dtypes(cls: str):
    def check():
        dtypes = _resolve(f"comfy.supported_models:{cls}.supported_inference_dtypes")
        expect(isinstance(dtypes, (list, tuple)) and all(isinstance(d, torch.dtype) for d in dtypes),
               f"{cls}.supported_inference_dtypes is {dtypes!r}, not a list of torch dtypes")
    return check


def _check_ops_linear():
    expect(issubclass(comfy.ops.disable_weight_init.Linear, torch.nn.Linear),
           "comfy.ops.disable_weight_init.Linear is no longer a torch.nn.Linear subclass")
    expect(issubclass(comfy.ops.manual_cast.Linear, torch.nn.Linear),
           "comfy.ops.manual_cast.Linear is no longer a torch.nn.Linear subclass")


MISC = [
    observed("OUTER_SAMPLE executor.class_obj.model_patcher.model.model_sampling.sigma_max is a full schedule's "
             "first sigma", "nodes/holder.py: a run that starts below it continues a schedule (a second sampler, "
             "image-to-image): its structure is already there", _check_sigma_max),
    observed("transformer_options['cond_or_uncond'] (DIFFUSION_MODEL call)", "the slots of a call (cond / uncond) "
             "keep their own caches (plan_call's slot_kinds)", _check_cond_or_uncond),
    observed("comfy.ops Linear layers are torch.nn.Linear", "the FLOP estimate counts a block's torch.nn.Linear "
             "layers (nodes/adapters/cost.py)", _check_ops_linear),
    *_version_fields_entries(),
    # devkit: tiny models of the variants (devkit/tiny_flux_variants.py, tiny_qwen_image.py) and training
    fields("comfy.ldm.flux.model:FluxParams", ["global_modulation", "mlp_silu_act", "ops_bias", "default_ref_method",
                                               "ref_index_scale"],
           "tests: tiny FLUX.2 models (flux2_config: global modulation, SiLU MLP, no biases, index references)"),
    gated(fields("comfy.ldm.flux.model:FluxParams", ["yak_mlp", "txt_norm", "txt_ids_dims"],
                 "tests: tiny Ovis-Image and LongCat-Image models"), "0.33.0", "Ovis-Image / LongCat-Image parameters"),
    gated(params("comfy.ldm.qwen_image.model:QwenImageTransformer2DModel.__init__", "tests: tiny Qwen-Image Edit "
                 "2511 and Layered models (devkit.tiny_qwen_image.variant_support reads these parameters)",
                 keywords=["default_ref_method", "use_additional_t_cond"]), "0.33.0",
          "Qwen-Image Edit 2511 / Layered parameters"),
    gated(observed("comfy.model_management.in_training (flux.math.apply_rope differentiable with it set)",
                   "devkit training (devkit/oop_blocks.training_mode): RoPE without a backward unless it is set",
                   _check_in_training), "0.33.0", "in_training switch"),
    params("comfy.ldm.flux.math:attention", "devkit training: the out-of-place blocks' attention (q, k, v, pe=, "
           "mask=, transformer_options=)", positional=3, keywords=["pe", "mask", "transformer_options"]),
    *[observed(f"FLUX.1 {kind}.{path} (devkit training)", "devkit/oop_blocks.py recomputes the block out of place "
               "from it", _oop_attr(kind, path))
      for kind, paths in (("double_block", ("num_heads", "img_attn.qkv", "img_attn.norm", "img_norm1", "txt_attn.qkv",
                                            "txt_attn.norm", "txt_norm1")),
                          ("single_block", ("num_heads", "norm", "mlp_hidden_dim_first")))
      for path in paths],
    symbol("comfy.model_management:unload_all_models", "tests: a model unloaded as ComfyUI does it (the forward "
           "patches' restore)", "callable"),
    # the bundled reference models (nodes/reference/loader.py, spec.py) on ComfyUI's config classes
    *[e for cls in ("FluxSchnell", "HunyuanVideo") for e in (
        observed(f"comfy.supported_models.{cls}.latent_format() has process_in / process_out",
                 "reference models: pixels <-> model-space latents as ComfyUI's sampler hands them over",
                 _check_latent_format(cls)),
        observed(f"comfy.supported_models.{cls}.supported_inference_dtypes",
                 "reference models: the manual cast dtype (unet_manual_cast(dtype, device, these dtypes))",
                 _check_inference_dtypes(cls)))],
]


def _families() -> list:
    seen: set = set()
    return [e for fam in FAMILIES for e in family_entries(fam, seen)]


CONTRACT = (CORE + SAMPLER + DIT + _families() + FAMILY_SPECIFIC + TIMESTEP_ZERO + CHROMA_SKIP + GENERIC + MODEL_PATCHER
            + MULTIGPU + MISC)


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


def test_an_entry_of_a_newer_comfyui_is_skipped_before_its_version_and_checked_from_it_on():
    entry = symbol("comfy.model_patcher:ModelPatcher.no_such_method", "a method of a later version")
    with pytest.raises(pytest.skip.Exception, match=r"has no a later method \(the pack expects it from 999\.0 on\)"):
        _run_entry(gated(entry, "999.0", "a later method"))
    with pytest.raises(pytest.fail.Exception, match=r"ModelPatcher has no attribute 'no_such_method'"):
        _run_entry(gated(entry, "0.1", "an older method"))


def test_a_renamed_forward_parameter_of_a_forward_patched_layer_fails_naming_it():
    """Z-Image's layers are reached through an object patch on their forward: a parameter the pack maps that the
    model no longer passes fails with the names it does pass."""
    fam = FAMILIES_BY_NAME["Z-Image"]
    spec = dataclasses.replace(fam.blocks["layer"], forward={"adaln": "renamed adaln_input"}, attrs={}, branches={},
                               checks={}, call_checks={})
    broken = dataclasses.replace(fam, forward_params={}, call_keys={}, model_attrs={}, model_checks={},
                                 blocks={"layer": spec})
    entries = {e.name: e for e in family_entries(broken)}
    with pytest.raises(pytest.fail.Exception, match=r"Z-Image layers\[i\]\.forward\(\.\.\., adaln=\.\.\.\): the layer "
                                                    r"is called without 'adaln' \(its forward's arguments: \[.*"
                                                    r"'adaln_input'.*renamed adaln_input"):
        _run_entry(entries["Z-Image layers[i].forward(..., adaln=...)"])


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
