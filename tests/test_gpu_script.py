"""benchmarks/gpu.py runs end to end at tiny sizes on CPU (the full sizes need a CUDA device)."""

from __future__ import annotations

import json

import family_checks  # noqa: F401  (loads the pack through ComfyUI's loader, CPU mode)

from benchmarks import gpu


def test_gpu_script_runs_end_to_end_on_tiny_models(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--steps", "6", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["subject"].split("-sized")[0] for r in data["results"]] == ["FLUX.1-dev", "Wan-2.1-1.3B"]
    for r in data["results"]:
        assert r["device"] == "cpu" and r["full_call_s"] > 0 and r["bandwidth_gb_s"] > 0
        assert set(r["variants"]) == {"clusca", "clusca cache_device=cpu"}
        for v in r["variants"].values():
            assert v["schedule_bound"] > 1 and 0 < v["cached_over_full"] and v["peak_cache_bytes"] > 0
            moved = v["floor_bytes"]
            # Wan's modulation is a parameter added to the timestep embedding, not a linear: no weights to read
            assert moved["cache"] == v["peak_cache_bytes"] and moved["mlp"] > 0 and moved["streams"] > 0
            assert (moved["modulation"] > 0) == r["subject"].startswith("FLUX")
            assert moved["total"] == moved["cache"] + moved["streams"] + moved["modulation"] + moved["mlp"]
            assert v["peak_vram_over_uncached_bytes"] is None      # no CUDA: no VRAM figure
