"""Blocks a model calls without a patch point (Lumina 2 / Z-Image's ``NextDiT``), reached through ModelPatcher's
own object patches.

For a block kind with a ``spec.ForwardPatch``, ``apply_clusca`` registers one :class:`ClusCaForwardPatch` per block
with ``add_object_patch("diffusion_model.<blocks>.<i>.forward", ...)``. While the model is loaded ComfyUI sets it
as the block's ``forward`` instance attribute (``nn.Module.__call__`` calls it, module hooks included) and puts the
original back on unpatch. The block module itself, its weights and their keys are not touched, so weight patches
(LoRA), quantised and cast ops, low-VRAM loading and state dicts work as without ClusCa; no class is changed.

The callable names the call's arguments the way a ``patches_replace["dit"]`` args dict does and hands them to the
same block patch every other family uses (``patching.ClusCaBlockPatch``), with an ``original_block`` that calls the
block's own forward with the caller's arguments (or the object patch another node had put on the same attribute
before ours). Outside an active ClusCa call it calls that original straight away.
"""

from __future__ import annotations

import inspect
import types

import comfy.patcher_extension
import comfy.utils

from .holder import KEY

CallbacksMP = comfy.patcher_extension.CallbacksMP
SUFFIX = ".forward"
CALLBACK_KEY = KEY + ".forward_patch"
_SIGNATURES: dict = {}


def _signature(cls) -> inspect.Signature:
    """The signature of ``cls.forward`` without ``self`` (read at run time: parameters differ by version)."""
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = inspect.signature(cls.forward)
        sig = _SIGNATURES[cls] = sig.replace(parameters=list(sig.parameters.values())[1:])
    return sig


def _active(transformer_options) -> bool:
    holder = transformer_options.get(KEY) if isinstance(transformer_options, dict) else None
    run = getattr(holder, "run", None)
    return run is not None and run.current is not None


class ClusCaForwardPatch:
    """The object patch on one block's ``forward``: the block as a block patch (``block_patch(args, extra)``)."""

    def __init__(self, block_patch, layer, forward_patch, inner=None):
        self.block_patch = block_patch
        self.layer = layer
        self.forward_patch = forward_patch
        self.rename = dict(forward_patch.rename)
        self.inner = inner          # another node's object patch on the same attribute, kept and called instead

    def rebound(self, layer) -> "ClusCaForwardPatch":
        """The same patch for the same block of another copy of the model."""
        return ClusCaForwardPatch(self.block_patch, layer, self.forward_patch, self.inner)

    def original(self, *args, **kwargs):
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return type(self.layer).forward(self.layer, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        try:
            bound = _signature(type(self.layer)).bind(*args, **kwargs)
        except TypeError:
            bound = None
        if bound is None or not _active(bound.arguments.get("transformer_options")):
            return self.original(*args, **kwargs)
        names = {name: self.rename.get(name, name) for name in bound.arguments}
        block_args = {names[name]: value for name, value in bound.arguments.items()}
        returns = self.forward_patch.returns

        def original_block(block_args: dict) -> dict:
            for name, key in names.items():
                bound.arguments[name] = block_args[key]
            return {returns: self.original(*bound.args, **bound.kwargs)}

        out = self.block_patch(block_args, {"original_block": original_block})[returns]
        # a block's forward returns a new tensor, which the model may change in place while keeping the blocks'
        # input aside (Lumina's post-layer patches in 0.33); the lite memory mode passes the input through
        return out.clone() if out is block_args.get(returns) else out


def _patched_layers(patcher):
    for key, patch in patcher.object_patches.items():
        if isinstance(patch, ClusCaForwardPatch):
            yield key, key[:-len(SUFFIX)]


def _drop_restored_forward(patcher, unpatch_all=True) -> None:
    """``ON_DETACH``: ComfyUI's unpatch puts back the ``forward`` it read before patching, which for a block
    without an instance ``forward`` is the class's method bound to the block, now stored on the instance; remove
    that copy so the block is exactly as before (its class's ``forward``, no self-reference)."""
    if not unpatch_all:
        return
    for _, path in _patched_layers(patcher):
        try:
            owner = comfy.utils.get_attr(patcher.model, path)
        except AttributeError:
            continue
        left = owner.__dict__.get("forward")
        if isinstance(left, types.MethodType) and left.__self__ is owner \
                and left.__func__ is getattr(type(owner), "forward", None):
            del owner.__dict__["forward"]


def _follow_the_model(original, clone) -> None:
    """``ON_CLONE``: a clone made with another copy of the model (ComfyUI 0.33's multi-GPU deep clones and their
    matching, delegates built from the loader's factory) gets patches that call that copy's blocks."""
    if clone.model is original.model:
        return
    for key, path in list(_patched_layers(clone)):
        clone.object_patches[key] = clone.object_patches[key].rebound(comfy.utils.get_attr(clone.model, path))


def install_forward_patches(m, adapter, kind: str, diffusion_model, make_block_patch) -> None:
    """Patch every block of ``kind`` on the ModelPatcher ``m`` (replacing ClusCa's own earlier patches, keeping
    another node's as the original)."""
    spec = adapter.kinds[kind]
    for i, layer in enumerate(adapter.blocks(diffusion_model, kind)):
        key = f"diffusion_model.{spec.blocks}.{i}{SUFFIX}"
        inner = m.object_patches.get(key)
        if isinstance(inner, ClusCaForwardPatch):
            inner = inner.inner
        m.add_object_patch(key, ClusCaForwardPatch(make_block_patch(kind, i), layer, spec.forward_patch, inner))
    for point, fn in ((CallbacksMP.ON_DETACH, _drop_restored_forward), (CallbacksMP.ON_CLONE, _follow_the_model)):
        m.remove_callbacks_with_key(point, CALLBACK_KEY)
        m.add_callback_with_key(point, CALLBACK_KEY, fn)
