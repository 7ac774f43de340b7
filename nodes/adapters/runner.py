"""Running one block of any described family (``spec.BlockKind``) on a full or a cached step.

- Full step: ComfyUI's block runs unchanged (``original_block``, or a block patch another node installed
  before ours) with forward hooks capturing every branch's output; the first full call of a run checks that
  the streams' inputs plus the gated branches add up to what the block returned (if they do not, a layout
  this version does not know, caching is switched off for the run and the model runs unchanged); the
  branches are recorded as Taylor factors; the clustering block clusters its streams' outputs.
- Cached step: no attention runs. The block's modulations are recomputed from the current patch args; every
  branch is added from its Taylor forecast through its own gate, in the block's order; token-wise MLP branches
  are first refreshed on one representative token per cluster with the block's own norm, modulation and MLP.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from .base import close_enough, submodule
from .block_steps import run_full_captured
from .spec import BlockKind, Branch, Stream

log = logging.getLogger("ClusCa")

#: plan.extras key: the outputs of the last block of a clustering kind, clustered when the next kind starts
PENDING_CLUSTERS = "pending_cluster_outputs"
#: plan.extras key (a family's CallTokens.extras): on this call the blocks change their branch modules' outputs
#: in place after computing them (e.g. gates applied per token range), so full steps capture copies
COPY_BRANCH_OUTPUTS = "copy_branch_outputs"


def branch_key(kind: BlockKind, index: int, stream: Stream, branch: Branch) -> tuple:
    return (kind.key, index, stream.name, branch.name)


def finite16(x: torch.Tensor) -> torch.Tensor:
    """ComfyUI clamps fp16 streams between blocks; cached outputs get the same treatment."""
    if x.dtype == torch.float16:
        return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


def _gate(mods: dict, branch: Branch) -> Optional[torch.Tensor]:
    return None if branch.mod is None else mods[branch.mod].gate


def run_block(kinds: tuple, kind: BlockKind, index: int, block, args: dict, extra: dict, plan, inner=None,
              count: Optional[int] = None) -> dict:
    """One block of ``kind`` (position ``index``; ``count`` blocks of that kind in the model) on this step."""
    if plan.full:
        return _run_full(kinds, kind, index, block, args, extra, plan, inner, count)
    return _run_cached(kind, index, block, args, plan)


# -- full steps -------------------------------------------------------------------------------------------

def _run_full(kinds, kind, index, block, args, extra, plan, inner, count) -> dict:
    pending = plan.extras.get(PENDING_CLUSTERS)
    if pending is not None and pending[0] is not kind:
        del plan.extras[PENDING_CLUSTERS]
        with plan.guard(f"{kind.key} {index}: clustering"):
            _cluster_pending(plan, kinds, kind, args, *pending)
    split = _split_active(plan, kind, block)
    branches, names = {}, {}
    for stream in kind.streams:
        for branch in stream.branches:
            label = f"{stream.name}.{branch.name}"
            branches[label] = submodule(block, branch.module)
            names[label] = (stream, branch)

    def adds_up(saved, captured, out):
        mods = kind.modulation(block, args, plan.extras)
        for stream in kind.streams:
            rebuilt = saved[stream.name]
            for branch in stream.branches:
                value = captured[f"{stream.name}.{branch.name}"]
                gate = _gate(mods, branch)
                rebuilt = rebuilt + (value if gate is None else gate * value)
            if not close_enough(rebuilt, out[stream.name]):
                return False
        return True

    def record(captured):
        for label, (stream, branch) in names.items():
            key = branch_key(kind, index, stream, branch)
            if split is not None:
                mlp = split.mlp_part(block, captured[label + ":input"])
                plan.record(key + ("mlp",), mlp)
                plan.record(key + ("attn",), captured[label] - mlp)
            else:
                plan.record(key, captured[label])

    def after(out):
        if not kind.clusters:
            return
        outputs = {s.name: out[s.name] for s in kind.streams}
        if kinds[-1] is not kind:
            # clustered when the next kind's first block runs (its input also shows the streams' order); kept
            # from every block, so the last one that ran counts even when a model skips blocks (Chroma)
            plan.extras[PENDING_CLUSTERS] = (kind, outputs)
        elif count is not None and index == count - 1:
            _cluster_streams(plan, kind, outputs)

    return run_full_captured(plan, f"{kind.key} {index}", (kind.key, index), branches, args, extra, inner,
                             keep=tuple(s.name for s in kind.streams), adds_up=adds_up, after=after,
                             record=record, inputs_of=tuple(branches) if split is not None else (),
                             copy=bool(plan.extras.get(COPY_BRANCH_OUTPUTS)))


def _cluster_streams(plan, kind: BlockKind, outputs: dict) -> None:
    for stream in kind.streams:
        if stream.clusters is not None:
            segments = plan.extras.get("segments") if stream.clusters == "img" else None
            plan.cluster(stream.clusters, outputs[stream.name], segments)


def _cluster_pending(plan, kinds: tuple, kind: BlockKind, args: dict, source: BlockKind, outputs: dict) -> None:
    """Cluster the previous kind's streams; when this kind runs on their concatenation, give its stream the
    joined clusters in the order the model concatenated them: found from what it computed (the joint input
    starts with one stream's output), not from the model's version (FLUX, and HunyuanVideo in newer ComfyUI,
    put the text first; HunyuanVideo in 0.3.75 the image)."""
    _cluster_streams(plan, source, outputs)
    if not kind.joint:
        return
    by_cluster = {s.clusters: outputs[s.name] for s in source.streams if s.clusters}
    if any(c not in by_cluster for c in kind.joint):
        return
    order = _concatenation_order(args[kind.streams[0].name], {c: by_cluster[c] for c in kind.joint})
    if order is not None:
        plan.join_clusters(kind.streams[0].clusters or "joint", order)
    elif _split_active(plan, kind, None) is not None:
        plan.abandon(f"the input of the first {kind.key} is not the concatenation of the streams {kind.joint}")


def _concatenation_order(joint: torch.Tensor, parts: dict) -> Optional[tuple]:
    names = list(parts)
    if joint.shape[1] != sum(p.shape[1] for p in parts.values()):
        return None
    for order in (tuple(names), tuple(reversed(names))):
        start, ok = 0, True
        for name in order:
            n = parts[name].shape[1]
            if not torch.equal(joint[:, start:start + n], parts[name]):
                ok = False
                break
            start += n
        if ok:
            return order
    return None


def _split_active(plan, kind: BlockKind, block):
    """The parallel-block split of ``refresh_scope="all"``, when this kind has one and it applies (``block``
    None: whether the kind has one at all)."""
    cfg = plan.config
    if kind.split is None or cfg.refresh_scope != "all" or cfg.refresh_rule == "none":
        return None
    return kind.split if block is None or kind.split.supported(block) else None


# -- cached steps -----------------------------------------------------------------------------------------

def _cached_mods(kind: BlockKind, block, args: dict, plan, split) -> dict:
    """The modulations of a cached step: the kind's partial ``cached_modulation`` when it has one (and no split
    needs the whole), checked once per run against the full one (a mismatch, e.g. a linear layer whose forward
    does more than its weights say, switches back to the full modulation for the run)."""
    if kind.cached_modulation is None or split is not None:
        return kind.modulation(block, args, plan.extras)
    # per run: block kind key -> whether its partial modulation matched the full one on its first cached call
    checked = plan.run.cached_checks.setdefault("partial_modulation", {})
    ok = checked.get(kind.key)
    if ok is False:
        return kind.modulation(block, args, plan.extras)
    mods = kind.cached_modulation(block, args, plan.extras)
    if ok is None:
        full = kind.modulation(block, args, plan.extras)
        checked[kind.key] = ok = all(
            getattr(m, part) is None or close_enough(getattr(m, part), getattr(full[name], part))
            for name, m in mods.items() for part in ("shift", "scale", "gate"))
        if not ok:
            log.warning("ClusCa - %s: the partial modulation of cached steps differs from the blocks' own; "
                        "using the full modulation for this run", kind.key)
            return full
    return mods


def _run_cached(kind: BlockKind, index: int, block, args: dict, plan) -> dict:
    split = _split_active(plan, kind, block)
    mods = _cached_mods(kind, block, args, plan, split)
    out = {}
    for stream in kind.streams:
        x = args[stream.name]
        fresh = True      # x is still the caller's tensor (the first branch writes a new one)
        for branch in stream.branches:
            key = branch_key(kind, index, stream, branch)
            gate = _gate(mods, branch)
            if split is not None:
                x_in = x
                x = plan.add_forecast(x, gate, key + ("attn",), inplace=not fresh)
                mod = mods[branch.mod]
                x = plan.add_refreshed_forecast(x, gate, key + ("mlp",), stream.clusters or "joint",
                                                lambda t, idx, m=mod: split.mlp(block, m.rows(idx), t),
                                                inplace=True, source=x_in)
            elif branch.mlp is not None and stream.clusters is not None:
                x = plan.add_refreshed_forecast(x, gate, key, stream.clusters, _token_mlp(block, branch, mods),
                                                _gamma(plan, stream), inplace=not fresh)
            else:
                x = plan.add_forecast(x, gate, key, inplace=not fresh)
            fresh = False
        out[stream.name] = finite16(x)
    return out


def _gamma(plan, stream: Stream) -> Optional[float]:
    """The text stream's refresh propagates to cluster-mates only with ``propagate_text``."""
    return None if stream.clusters != "txt" or plan.config.propagate_text else 0.0


def _token_mlp(block, branch: Branch, mods: dict):
    form = branch.mlp
    norm = form.norm if callable(form.norm) else submodule(block, form.norm)
    mlp = submodule(block, form.mlp)
    post = submodule(block, form.post_norm) if form.post_norm else None
    mod = mods[branch.mod] if branch.mod is not None else None

    def fn(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        h = norm(tokens)
        if mod is not None:
            h = mod.rows(index).modulate(h)
        h = mlp(h)
        return post(finite16(h)) if post is not None else h     # ComfyUI clamps fp16 before a post-norm
    return fn
