"""The full-step half of a block run: :func:`run_full_captured` runs ComfyUI's block (``original_block``, or
a block patch another node installed before ours) with forward hooks capturing its branch outputs (attention,
MLP...), checks once per run that those outputs and the block's gates add up to what the block returned (if
they do not, a ComfyUI change this version does not know, caching is switched off for the run), records them
as Taylor factors, and lets the last block cluster its output.
"""

from __future__ import annotations

from typing import Callable, Optional

from .base import call_block, capture_outputs


def run_full_captured(plan, where: str, key: tuple, branches: dict, args: dict, extra: dict, inner=None,
                      keep: tuple = (), adds_up: Optional[Callable] = None,
                      after: Optional[Callable] = None, record: Optional[Callable] = None,
                      inputs_of: tuple = (), copy: bool = False) -> dict:
    """Run a block in full and record the outputs of its ``branches`` (name -> submodule) under
    ``key + (name,)`` (or let ``record(captured)`` do the recording; ``inputs_of`` names branches whose
    inputs are captured too).

    ``keep`` names the inputs in ``args`` the layout check needs (cloned before the block runs, since blocks
    may update them in place); ``adds_up(saved_inputs, captured, out) -> bool`` is that check, run on the
    first full call of a run. ``after(out)`` runs once the branches are recorded (e.g. clustering). ``copy``:
    the block changes its branch outputs in place after computing them, capture copies.
    """
    verify = plan.verify and adds_up is not None
    saved = {k: args[k].clone() for k in keep} if verify else None
    with capture_outputs(branches, inputs_of, copy) as captured:
        out = call_block(args, extra, inner)
    with plan.guard(where):
        if any(name not in captured for name in branches):
            plan.abandon(f"{where} did not run its branch modules as expected")
            return out
        if verify and not adds_up(saved, captured, out):
            plan.abandon(f"{where}: branch outputs and gates do not add up to the block's output")
            return out
        if record is not None:
            record(captured)
        else:
            for name in branches:
                plan.record(key + (name,), captured[name])
        if after is not None:
            after(out)
    return out
