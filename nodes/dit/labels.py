"""ImageNet class labels as ComfyUI conditioning, and the ``DiT Class Label (ClusCa)`` node.

A DiT conditioning is ComfyUI's usual ``[[tensor, dict]]``: the class index travels in the dict under
``LABEL_KEY`` as a (1,) int64 tensor, and the tensor slot holds a small zero placeholder (DiT has no text
context). Keeping the label out of the tensor slot keeps it intact through nodes that transform that tensor
(ConditioningZeroOut, ConditioningAverage...) and through float16/bfloat16 casts. ``DiTModel.extra_conds``
turns it into the model's ``y`` input. The null class (index 1000, DiT's "no class" embedding) is the
unconditional input of classifier-free guidance: it goes to the sampler's negative input.

A DiT trained without label dropout (``class_dropout_prob=0``) has no null-class row: its table has one row
per class and nothing to guide away from. For such a model the null class becomes ``NO_CLASS`` (never a real
class), :func:`null_negative_is_positive` (installed by the loader) makes a null negative give the positive's
prediction, so classifier-free guidance has no effect, and a warning says so once per model.

The 1000 class names (``imagenet_classes.json``) are torchvision's ImageNet-1k category list, in index order.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from pathlib import Path

import torch
from comfy_api.latest import io

#: key of the class index in a DiT conditioning's dict
LABEL_KEY = "dit_class_label"
NUM_IMAGENET_CLASSES = 1000
#: DiT's unconditional "null class" (the last row of the official label table)
NULL_CLASS = NUM_IMAGENET_CLASSES
#: the model input ``y`` for "no class" on a model without a null-class row (never a real class)
NO_CLASS = -1
DEFAULT_CLASS = 207  # golden retriever, the first label of DiT's sample script

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.json")


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    names = json.loads(CLASSES_FILE.read_text(encoding="utf-8"))
    if len(names) != NUM_IMAGENET_CLASSES:
        raise RuntimeError(f"{CLASSES_FILE} must list {NUM_IMAGENET_CLASSES} class names; it has {len(names)}")
    return tuple(names)


def _normalise(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower())


def find_class(name: str) -> int:
    """The ImageNet index of a class name: an exact name (case and spacing ignored), a leading index such as
    '207' or '207: golden retriever', or a part of exactly one name. ValueError with candidates otherwise."""
    query = _normalise(name)
    if not query:
        raise ValueError("empty class name")
    lead = re.match(r"^(\d+)\s*(?::|$)", query)
    if lead:
        index = int(lead.group(1))
        if not 0 <= index < NUM_IMAGENET_CLASSES:
            raise ValueError(f"class index {index} is outside 0-{NUM_IMAGENET_CLASSES - 1}")
        return index
    names = [_normalise(n) for n in imagenet_classes()]
    if query in names:
        return names.index(query)
    partial = [i for i, n in enumerate(names) if query in n]
    if len(partial) == 1:
        return partial[0]
    if partial:
        shown = ", ".join(f"{i}: {imagenet_classes()[i]}" for i in partial[:12])
        more = f" and {len(partial) - 12} more" if len(partial) > 12 else ""
        raise ValueError(f"class name '{name}' matches {len(partial)} ImageNet classes ({shown}{more}); "
                         "type the full name or use the index")
    close = difflib.get_close_matches(query, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(imagenet_classes()[names.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"'{name}' is not an ImageNet class name{hint}")


def label_conditioning(index: int) -> list:
    """A CONDITIONING holding one class label (``NULL_CLASS`` = unconditional)."""
    return [[torch.zeros(1, 1, 1), {LABEL_KEY: torch.tensor([int(index)], dtype=torch.long)}]]


def _raw_labels(cond: dict):
    """The labels of one conditioning dict as given (under ``LABEL_KEY``, or an integer tensor in the tensor
    slot, which ComfyUI passes as ``cross_attn``), or None."""
    labels = cond.get(LABEL_KEY)
    if labels is None:
        cross = cond.get("cross_attn")
        if isinstance(cross, torch.Tensor) and not cross.is_floating_point() and not cross.is_complex():
            labels = cross
    return labels


def labels_from_cond(cond: dict, num_classes: int, has_null_class: bool = True) -> torch.Tensor:
    """The int64 class labels of one conditioning, from ``extra_conds``' keyword arguments. Also accepts the
    label as an integer tensor in the conditioning's tensor slot (the layout of other DiT node packs).
    ImageNet's null class (1000) maps to the model's own null row (``num_classes``), or to ``NO_CLASS`` when
    the model has no null row (``has_null_class`` False)."""
    labels = _raw_labels(cond)
    if labels is None:
        raise ValueError("DiT models are conditioned on class labels, not text: connect the outputs of a "
                         "'DiT Class Label (ClusCa)' node to the sampler's positive and negative inputs")
    labels = torch.as_tensor(labels).to(torch.long).reshape(-1)
    if has_null_class:
        labels = torch.where(labels == NULL_CLASS, torch.full_like(labels, num_classes), labels)
        bad = labels[(labels < 0) | (labels > num_classes)]
        if bad.numel():
            raise ValueError(f"class label {int(bad[0])} is outside this DiT model's 0-{num_classes - 1} "
                             f"(and {NULL_CLASS} for the null class)")
        return labels
    labels = torch.where(labels == NULL_CLASS, torch.full_like(labels, NO_CLASS), labels)
    bad = labels[((labels < 0) | (labels >= num_classes)) & (labels != NO_CLASS)]
    if bad.numel():
        raise ValueError(f"class label {int(bad[0])} is outside this DiT model's 0-{num_classes - 1} (it has "
                         f"no null class; {NULL_CLASS} as the negative is ignored)")
    return labels


def is_null_conditioning(cond: dict) -> bool:
    """Whether one of the sampler's conditioning dicts holds the null class only."""
    labels = _raw_labels(cond)
    if labels is None:
        return False
    labels = torch.as_tensor(labels).reshape(-1)
    return labels.numel() > 0 and bool((labels == NULL_CLASS).all())


NO_NULL_CLASS_WARNING = (
    "ClusCa DiT - this model has no null-class row (it was trained without class dropout, "
    "class_dropout_prob=0), so there is no unconditional prediction to guide away from: the null-class "
    "negative is ignored and gives the positive's prediction, so CFG has no effect (set cfg to 1.0 to skip "
    "computing the negative). A real class as the negative still guides away from that class.")


def null_negative_is_positive(args: dict) -> list:
    """ComfyUI ``sampler_pre_cfg_function`` of DiT models without a null-class row: when the negative is the
    null class, its prediction is replaced by the positive's (CFG then returns the positive's prediction
    for any cfg). The null class anywhere else (in the positive, or combined with classes in the negative) is
    refused: such a model has no prediction for it."""
    conds, out = args["conds"], list(args["conds_out"])
    positive = conds[0] if len(conds) > 0 else None
    negative = conds[1] if len(conds) > 1 else None
    if positive and any(is_null_conditioning(c) for c in positive):
        raise ValueError("this DiT model has no null class (trained without class dropout): the sampler's "
                         "positive input must be a class, not the null class")
    if negative and len(out) > 1:
        null = [is_null_conditioning(c) for c in negative]
        if all(null):
            out[1] = out[0]
        elif any(null):
            raise ValueError("this DiT model has no null class (trained without class dropout): the null class "
                             "cannot be combined with classes in the negative input")
    return out


class ClusCaDiTClassLabel(io.ComfyNode):
    """An ImageNet class as the positive conditioning of a DiT model, and the null class as the negative."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClusCaDiTClassLabel",
            display_name="DiT Class Label (ClusCa)",
            category="ClusCa/DiT",
            description=("Class conditioning for class-conditional DiT models (ImageNet): the chosen class as "
                         "positive, DiT's null class as negative, for classifier-free guidance in KSampler."),
            inputs=[
                io.Int.Input("class_index", default=DEFAULT_CLASS, min=0, max=NUM_IMAGENET_CLASSES - 1, step=1,
                             tooltip="ImageNet class index, 0-999 (e.g. 207 = golden retriever, 360 = otter, "
                                     "88 = macaw). Used when class_name is empty."),
                io.String.Input("class_name", default="", multiline=False,
                                tooltip="Optional ImageNet class name (e.g. 'golden retriever'); when set it "
                                        "replaces class_index. Case-insensitive; a part of exactly one class "
                                        "name also works, and '207' or '207: golden retriever' too."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive",
                                       tooltip="The class, for the sampler's positive input."),
                io.Conditioning.Output(display_name="negative",
                                       tooltip="DiT's null class (unconditional), for the sampler's negative "
                                               "input: classifier-free guidance pushes away from it. A model "
                                               "trained without class dropout has no null class: CFG then has "
                                               "no effect (a warning says so)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, class_index=None, class_name=None):
        if class_name and class_name.strip():
            try:
                find_class(class_name)
            except ValueError as exc:
                return str(exc)
        return True

    @classmethod
    def execute(cls, class_index=DEFAULT_CLASS, class_name="") -> io.NodeOutput:
        index = find_class(class_name) if class_name and class_name.strip() else int(class_index)
        if not 0 <= index < NUM_IMAGENET_CLASSES:
            raise ValueError(f"class index {index} is outside 0-{NUM_IMAGENET_CLASSES - 1}")
        return io.NodeOutput(label_conditioning(index), label_conditioning(NULL_CLASS))
