"""What ClusCa knows about a model family, as data: the description every family module fills in.

A family is a model class whose forward calls a block patch point per block (or, for models without one, whose
blocks are reached through ``ModelPatcher.add_object_patch``: :class:`ForwardPatch`). Each kind of block (a
``patches_replace["dit"]`` key such as ``double_block``) holds one or two residual streams (``img``, ``txt``);
each stream adds a sequence of branches to itself, ``x <- x + gate * branch(x)``: attention outputs, which
ClusCa forecasts on cached steps, and token-wise MLPs, which it also recomputes for one representative token
per cluster (the ClusCa refresh). The description names, per branch, the submodule whose output *is* the
branch (captured at full steps by a forward hook) and the modulation that gates it; one small function per
block kind says where the block's modulations come from. Everything else (full and cached block runs, the
layout self-check, clustering, cost estimates) is shared code in ``nodes/adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Mod:
    """The modulation of one branch: its input is ``norm(x) * (1 + scale) + shift`` and its output is added
    as ``x + gate * branch``. Each tensor broadcasts against the stream (B, N, D): (B, 1, D) for one value per
    batch row, (B, N, D) for one per token; ``None`` means none (no shift, no scale, ungated)."""
    shift: Optional[torch.Tensor] = None
    scale: Optional[torch.Tensor] = None
    gate: Optional[torch.Tensor] = None

    def rows(self, index: torch.Tensor) -> "Mod":
        """The modulation of the tokens ``index`` (B, K): per-token parts gathered, per-row parts as they are."""
        def pick(t):
            if t is None or t.ndim < 3 or t.shape[-2] == 1:
                return t
            return torch.gather(t, 1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        return Mod(pick(self.shift), pick(self.scale), pick(self.gate))

    def modulate(self, x: torch.Tensor) -> torch.Tensor:
        """``x * (1 + scale) + shift`` (each part only when present)."""
        if self.scale is None:
            return x if self.shift is None else x + self.shift
        if self.shift is None:
            return x * (1 + self.scale)
        return torch.addcmul(self.shift, x, 1 + self.scale)


def as_mod(m) -> Mod:
    """ComfyUI's ``ModulationOut`` (shift, scale, gate) as a :class:`Mod`."""
    return Mod(m.shift, m.scale, m.gate)


def per_token(mods: list, token_index: torch.Tensor) -> Mod:
    """One :class:`Mod` from several, token by token: token ``n`` takes ``mods[token_index[n]]`` (e.g. the
    reference tokens of an edit model, modulated with the timestep-zero embedding)."""
    def stack(name):
        parts = [getattr(m, name) for m in mods]
        if any(p is None for p in parts):
            return None
        t = torch.stack([p.expand(p.shape[0], 1, p.shape[-1]) if p.ndim == 3 else p.unsqueeze(1) for p in parts], 0)
        return t[token_index.to(t.device), :, 0].movedim(0, 1)        # (B, N, D)
    return Mod(stack("shift"), stack("scale"), stack("gate"))


@dataclass(frozen=True)
class TokenMlp:
    """A token-wise branch ClusCa can recompute for a few tokens: ``post_norm(mlp(modulate(norm(x))))``,
    with the branch's modulation (module paths relative to the block; ``norm`` may also be a function of the
    tokens, for blocks that normalise with a plain function such as LTX's ``rms_norm``)."""
    norm: object
    mlp: str
    post_norm: Optional[str] = None


@dataclass(frozen=True)
class Branch:
    """One residual branch of a stream, ``x <- x + gate * value``.

    name:   the cache key part ("attn", "mlp", "cross"...).
    module: dotted path, from the block, of the submodule whose output is the branch value.
    mod:    the key of the :class:`Mod` (from the block kind's ``modulation``) whose gate multiplies it;
            None = ungated.
    mlp:    set for a token-wise branch: how to recompute it (the ClusCa refresh, the error probe).
    """
    name: str
    module: str
    mod: Optional[str] = None
    mlp: Optional[TokenMlp] = None


@dataclass(frozen=True)
class Stream:
    """A residual stream of a block: ``name`` is its key in the block patch's args and output; ``branches``
    in the order the block adds them; ``clusters`` names the token clusters its refresh uses (None: none)."""
    name: str
    branches: tuple
    clusters: Optional[str] = None


@dataclass(frozen=True)
class ForwardPatch:
    """For a model that calls its blocks without a patch point (Lumina 2 / Z-Image): every block's ``forward``
    attribute is replaced, through ``ModelPatcher.add_object_patch``, by a callable that names the call's
    arguments like a block patch's args (``rename``: pairs of forward parameter and args key, e.g.
    ``(("x", "img"), ("adaln_input", "vec"))``; other parameters keep their names), runs the block like any
    other family's block patch, and returns the stream ``returns`` as the block's own forward would."""
    rename: tuple
    returns: str = "img"


@dataclass(frozen=True)
class BlockKind:
    """One kind of block: its patch key, where the blocks are, their streams and modulation.

    key:        ``patches_replace["dit"]`` key ("double_block", "single_block"); with ``forward_patch``, only the
                kind's name in cache keys and messages.
    blocks:     attribute path of the block list on the diffusion model.
    streams:    the residual streams a block of this kind updates.
    modulation: ``fn(block, args, extras) -> {name: Mod}``, the block's modulations on this call, from the patch
                args (e.g. ``block.img_mod(args["vec"])``) and the call's ``extras`` (see Family.tokens).
    modulation_modules: submodules that compute the modulation (they see one token: cost estimate only).
    clusters:   the output of the last block of this kind is clustered (the paper: the last double block).
    joint:      blocks of this kind run on the concatenation of these cluster streams (FLUX's single blocks
                on text + image, clustered as the previous kind's streams, in the order found from what the
                blocks compute; Lumina's one stream of caption + image tokens).
    split:      optional :class:`ParallelSplit` for ``refresh_scope="all"`` (the MLP half of parallel blocks).
    forward_patch: set when the model offers no patch point for these blocks (:class:`ForwardPatch`).
    cached_modulation: optional ``fn(block, args, extras) -> {name: Mod}`` for cached steps without the
                parallel split: only the parts a cached step uses (the gates of forecast branches, all of a
                refreshed MLP branch's), computed from only those rows of the modulation linear
                (``adapters.modulation``); parts it leaves out are None.
    """
    key: str
    blocks: str
    streams: tuple
    modulation: Callable
    modulation_modules: tuple = ()
    clusters: bool = False
    joint: tuple = ()
    split: Optional["ParallelSplit"] = None
    forward_patch: Optional[ForwardPatch] = None
    cached_modulation: Optional[Callable] = None


@dataclass(frozen=True)
class ParallelSplit:
    """A parallel block (attention and MLP from the same input, one output projection): how its single cached
    branch splits into an attention part and an MLP part, so the MLP part can be refreshed.
    ``mlp_part(block, captured_projection_input)`` and ``mlp(block, mod, x)`` (the MLP part for tokens x)."""
    mlp_part: Callable
    mlp: Callable
    supported: Callable = lambda block: True


@dataclass
class CallTokens:
    """What a family tells the shared code about one model call (from the forward's bound arguments).

    grid:       (frames, rows, columns) of the target image tokens.
    text:       text tokens in the text stream (0 for single-stream models with cross-attention).
    reference:  reference / context image tokens in the image stream (edit and Kontext models).
    reference_first: whether they come before the target tokens (HunyuanVideo's ref_latent) or after.
    extras:     values the block kinds' ``modulation`` need on this call (e.g. token-wise modulation maps).
    fingerprint: extra hashable parts of the cache fingerprint (shapes that change the token layout).
    """
    batch: int
    grid: tuple
    text: int = 0
    reference: int = 0
    reference_first: bool = False
    extras: dict = field(default_factory=dict)
    fingerprint: tuple = ()


@dataclass(frozen=True)
class Family:
    """One supported model family.

    key / name:     internal key (stable: stored in saved holders and benchmark data) / the name users see.
    model_class:    ``"module:Class"`` of ComfyUI's diffusion model (the exact class, no subclasses), or a function
                    returning the class (a model class of this pack).
    block_kinds:    in forward order.
    tokens:         ``fn(diffusion_model, bound_forward_args, config) -> CallTokens``, or a str: the reason this
                    call runs in full.
    refuse:         ``fn(diffusion_model) -> Optional[str]``: why a model of this class is not this family
                    (e.g. a FLUX.2 under the FLUX.1 entry); None = it is.
    reference_settings: the reference code's settings for this family (used when the node asks for them).
    notes:          what runs in full, for the README and the help page.
    """
    key: str
    name: str
    model_class: object
    block_kinds: tuple
    tokens: Callable
    refuse: Callable = lambda dm: None
    reference_settings: dict = field(default_factory=dict)
    notes: str = ""

    def resolve_class(self):
        import importlib
        if callable(self.model_class):
            return self.model_class()
        module, _, cls = self.model_class.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            return None     # this ComfyUI version has no such model
