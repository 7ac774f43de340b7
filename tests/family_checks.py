"""Reusable checks every supported model family must pass on real ComfyUI (diffusers-style test mixin).

A family's test class subclasses :class:`FamilyChecks` and provides a tiny model, conditionings and a
latent. Every check samples through ``comfy.sample`` with the pack loaded by ComfyUI's node loader.
"""

from __future__ import annotations

import gc

import torch

from devkit.comfy_env import load_pack, pack_module
from devkit.metrics import psnr
from devkit.tiny_models import AttentionCounter, sample

load_pack()
import nodes  # noqa: E402  (ComfyUI's module, after bootstrap)

from clusca_core.schedule import build_full_step_mask  # noqa: E402


def apply_node(model, **inputs):
    node = nodes.NODE_CLASS_MAPPINGS["ApplyClusCa"]
    return node.execute(model=model, **inputs).result[0]


def last_summary(model):
    return model.model_options["transformer_options"]["clusca"].last_summary


def live_slot_caches() -> int:
    gc.collect()
    slot_cls = pack_module("clusca_core.slots").SlotCache
    return sum(1 for o in gc.get_objects() if isinstance(o, slot_cls))


class FamilyChecks:
    family = ""
    blocks = 0                # blocks that run attention in one model evaluation
    min_psnr_defaults = 20.0  # dB, final latent vs uncached at the node's defaults (10 steps)
    #: attention calls a model evaluation makes outside the cached blocks (e.g. a text refiner)
    extra_attention_per_call = 0
    #: the schedule the node's defaults give on this family (families may have reference settings)
    default_schedule = dict(warmup_steps=3, fresh_interval=5)

    def schedule(self, steps: int) -> list:
        return build_full_step_mask(steps, self.default_schedule["warmup_steps"], self.default_schedule["fresh_interval"])

    # -- to provide --------------------------------------------------------------------------------
    def make_model(self, dtype=torch.float32):
        raise NotImplementedError

    def conds(self, seed, batch=1, tokens=None):
        raise NotImplementedError

    def latent(self, batch=1, size=None):
        raise NotImplementedError

    def run(self, model, steps=10, cfg=2.0, sampler="euler", batch=1, size=None, seed=0, pos=None, neg=None, **kw):
        pos = pos if pos is not None else self.conds(1, batch)
        neg = neg if neg is not None else self.conds(2, batch)
        return sample(model, pos, neg, steps=steps, cfg=cfg, sampler=sampler, latent=self.latent(batch, size),
                      seed=seed, **kw)

    # -- checks ---------------------------------------------------------------------------------------
    def test_interval_one_is_exactly_the_unpatched_model(self):
        m = self.make_model()
        base = self.run(m)
        out = self.run(apply_node(m, fresh_interval=1))
        assert torch.equal(out, base)

    def test_full_steps_are_bit_identical_while_caching(self):
        """Warm-up steps run ComfyUI's blocks with the branch capture on: x0 must match bit for bit."""
        m = self.make_model()
        seen = {"base": [], "clusca": []}

        def grab(key):
            return lambda step, x0, x, total: seen[key].append(x0.clone())

        self.run(m, callback=grab("base"))
        self.run(apply_node(m, warmup_steps=3, clusters=8), callback=grab("clusca"))
        for i in range(3):
            assert torch.equal(seen["base"][i], seen["clusca"][i]), f"step {i}"
        assert not torch.equal(seen["base"][-1], seen["clusca"][-1])   # and caching did happen later

    def test_attention_runs_only_on_full_steps(self):
        m = apply_node(self.make_model())
        counter = AttentionCounter()
        counter.install(m)
        self.run(m, steps=12, cfg=2.0)      # cond and uncond batched: one model call per step
        expected_full = sum(self.schedule(12))
        assert counter.calls == expected_full * self.blocks + 12 * self.extra_attention_per_call
        s = last_summary(m)
        assert (s["full_steps"], s["cached_steps"]) == (expected_full, 12 - expected_full)

    def test_defaults_are_finite_and_close_to_baseline(self):
        m = self.make_model()
        base = self.run(m)
        out = self.run(apply_node(m))
        assert torch.isfinite(out).all()
        assert psnr(out, base) > self.min_psnr_defaults
        assert not torch.equal(out, base)

    def test_split_cond_uncond_calls(self):
        """Conditionings of incompatible lengths are evaluated in separate calls: each keeps its cache."""
        m = self.make_model()
        pos, neg = self.conds(1, tokens=8), self.conds(2, tokens=7)
        base = self.run(m, pos=pos, neg=neg)
        patched = apply_node(m)
        counter = AttentionCounter()
        counter.install(patched)
        out = self.run(patched, pos=pos, neg=neg)
        assert counter.calls == 2 * (sum(self.schedule(10)) * self.blocks + 10 * self.extra_attention_per_call)
        assert torch.isfinite(out).all() and psnr(out, base) > self.min_psnr_defaults

    def test_cfg_one_and_batch_two(self):
        m = self.make_model()
        base = self.run(m, cfg=1.0, batch=2)
        out = self.run(apply_node(m), cfg=1.0, batch=2)
        assert out.shape == base.shape and torch.isfinite(out).all()
        for i in range(2):
            assert psnr(out[i], base[i]) > self.min_psnr_defaults
        base2 = self.run(m, cfg=2.0, batch=2)
        out2 = self.run(apply_node(m), cfg=2.0, batch=2)
        assert psnr(out2, base2) > self.min_psnr_defaults

    def test_heun_keeps_the_schedule(self):
        m = apply_node(self.make_model())
        counter = AttentionCounter()
        counter.install(m)
        steps = 8
        out = self.run(m, steps=steps, sampler="heun")
        sched = self.schedule(steps)
        # Heun: step i evaluates at sigma_i and sigma_{i+1} (the corrector), the last step only at sigma_i.
        full_evals = sum(sched[i] + sched[i + 1] for i in range(steps - 1)) + sched[steps - 1]
        evals = 2 * (steps - 1) + 1
        assert counter.calls == full_evals * self.blocks + evals * self.extra_attention_per_call
        assert torch.isfinite(out).all()
        assert last_summary(m)["full_steps"] == sum(sched)

    def test_back_to_back_runs_at_different_sizes(self):
        m = self.make_model()
        patched = apply_node(m)
        small = self.latent_size_pair()[0]
        large = self.latent_size_pair()[1]
        first = self.run(patched, size=small)
        second = self.run(patched, size=large)
        fresh = self.run(apply_node(m), size=large)
        assert torch.equal(second, fresh)                       # nothing carried over from the first run
        again = self.run(patched, size=small)
        assert torch.equal(first, again)
        assert live_slot_caches() == 0                          # every cache freed after each run

    def test_bypass_leaves_the_model_untouched(self):
        m = self.make_model()
        before = self.run(m)
        wrappers_before = {k: dict(v) for k, v in m.wrappers.items()}
        to_before = set(m.model_options.get("transformer_options", {}))
        patched = apply_node(m)
        assert patched is not m
        assert {k: dict(v) for k, v in m.wrappers.items()} == wrappers_before
        assert set(m.model_options.get("transformer_options", {})) == to_before
        self.run(patched)
        assert torch.equal(self.run(m), before)

    def test_global_rng_is_not_touched(self):
        m = self.make_model()
        patched = apply_node(m)
        torch.manual_seed(123)
        self.run(m)
        after_base = torch.random.get_rng_state()
        torch.manual_seed(123)
        self.run(patched)
        assert torch.equal(torch.random.get_rng_state(), after_base)

    def test_summary_is_logged(self, caplog):
        m = apply_node(self.make_model())
        with caplog.at_level("INFO", logger="ClusCa"):
            self.run(m, steps=10)
        lines = [r.getMessage() for r in caplog.records if r.name == "ClusCa" and "steps," in r.getMessage()]
        assert len(lines) == 1
        full = sum(self.schedule(10))
        line = lines[0]
        assert self.family in line and f"10 steps, {full} full, {10 - full} cached" in line
        assert "tokens computed per cached step" in line and "fewer transformer FLOPs" in line and "cache" in line
        s = last_summary(m)
        assert s["peak_cache_bytes"] > 0 and s["estimated_flops_speedup"] > 1.0

    def test_basic_node_with_only_the_model_connected(self):
        """The ClusCa node at its defaults: the run spends steps / speed-up full steps and caches the rest."""
        m = self.make_model()
        node = nodes.NODE_CLASS_MAPPINGS["ClusCa"]
        patched = node.execute(model=m).result[0]
        assert patched is not m
        steps = 12
        out = self.run(patched, steps=steps)
        s = last_summary(patched)
        assert s["speedup_asked"] == 4.0 and "disabled" not in s
        assert s["full_steps"] == round(steps / 4.0) and s["cached_steps"] == steps - s["full_steps"]
        assert torch.isfinite(out).all()

    def latent_size_pair(self):
        raise NotImplementedError
