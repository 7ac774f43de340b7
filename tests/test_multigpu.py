"""ComfyUI's multi-GPU CFG split (new in 0.33): conditionings run in parallel threads, one per device, each on
its own copy of the model (``ModelPatcher.deepclone_multigpu``), all sharing the objects in
``transformer_options``. ClusCa keeps a plan per thread and takes its shared decisions under a lock.

The test drives ComfyUI's own code path on CPU: a second "device" ``cpu:1`` (a distinct device key for
ComfyUI, CPU memory for torch) gets a deep clone of the model made from the loader's ``cached_patcher_init``,
registered the way ``comfy.multigpu.create_multigpu_deepclones`` registers it, and the sampler then splits
cond and uncond over the two devices with its ``MultiGPUThreadPool`` (``_calc_cond_batch_multigpu``).
"""

from __future__ import annotations

import threading

import pytest
import torch

from family_checks import apply_node, last_summary
from devkit.comfy_env import pack_module
from devkit.tiny_models import sample

multigpu = pytest.importorskip("comfy.multigpu", reason="this ComfyUI version has no multi-GPU CFG split")
import comfy.patcher_extension  # noqa: E402

SECOND_DEVICE = torch.device("cpu", 1)


def split_over_two_devices(model):
    """A clone of ``model`` whose sampler splits the conditionings over ``cpu`` and ``cpu:1`` (what
    ``create_multigpu_deepclones`` does, with the second device chosen here: on CPU ComfyUI lists one)."""
    extra = model.deepclone_multigpu(new_load_device=SECOND_DEVICE)
    extra.is_multigpu_base_clone = True
    m = model.clone()
    m.set_additional_models("multigpu", [extra])
    m.match_multigpu_clones()
    multigpu.GPUOptionsGroup().register(m)
    return m


class CallLog:
    """A DIFFUSION_MODEL wrapper recording, per model call, the thread, the device ComfyUI gave it and
    which model object ran."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, executor, *args, **kwargs):
        to = kwargs.get("transformer_options")
        if to is None:
            to = next((a for a in args if isinstance(a, dict) and "uuids" in a), {})
        with self.lock:
            self.calls.append((threading.get_ident(), str(to.get("multigpu_thread_device")),
                               id(executor.class_obj)))
        return executor(*args, **kwargs)

    def install(self, model):
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-call-log", self)


@pytest.fixture(scope="module")
def reference():
    model, spec = pack_module("nodes.reference.loader").load_reference_model("flux_shapes")
    pos, neg = spec.conditioning("red circle", negative="")
    return model, pos, neg, spec.empty_latent()["samples"]


def run(model, reference, steps=12):
    _, pos, neg, latent = reference
    return sample(model, pos, neg, steps=steps, cfg=4.0, latent=latent)


def test_reference_loader_supports_deepclone_multigpu(reference):
    model = reference[0]
    assert model.cached_patcher_init is not None
    clone = model.deepclone_multigpu(new_load_device=SECOND_DEVICE)
    assert clone.model is not model.model and clone.load_device == SECOND_DEVICE
    for a, b in zip(clone.model.diffusion_model.parameters(), model.model.diffusion_model.parameters()):
        assert torch.equal(a, b)


def test_two_threads_two_devices_match_the_serial_run(reference):
    model = reference[0]
    # ComfyUI's own numbers: the same uncached model, conds batched on one device vs split over two
    uncached_serial = run(model, reference)
    split = split_over_two_devices(model)
    log = CallLog()
    log.install(split)
    uncached_split = run(split, reference)
    assert len({thread for thread, _, _ in log.calls}) == 2
    assert {device for _, device, _ in log.calls} == {"cpu", "cpu:1"}
    assert len({obj for _, _, obj in log.calls}) == 2        # each thread runs its own model copy
    rounding = float((uncached_split - uncached_serial).abs().max())

    patched = apply_node(model)
    serial = run(patched, reference)
    s_serial = last_summary(patched)
    patched_split = split_over_two_devices(patched)
    log = CallLog()
    log.install(patched_split)
    parallel = run(patched_split, reference)
    s_split = last_summary(patched_split)

    assert {device for _, device, _ in log.calls} == {"cpu", "cpu:1"}
    assert "disabled" not in s_split
    assert s_split["full_step_indices"] == s_serial["full_step_indices"]
    assert s_split["cached_steps"] == s_serial["cached_steps"] > 0
    # one call per device and step: both threads ran their cached steps from their own caches
    assert s_split["evaluations_cached"] == 2 * s_split["cached_steps"]
    assert s_split["evaluations_full"] == 2 * s_split["full_steps"]
    assert torch.isfinite(parallel).all()
    diff = float((parallel - serial).abs().max())
    assert diff <= max(10 * rounding, 1e-4), (diff, rounding)
