"""The benchmark report (docs/benchmarks.json / .md): fronts, merging a re-measured model into the stored report,
and the parts other benchmarks write into it. No model runs here: the report's own logic on small data."""

import json

import pytest

from benchmarks import controller, suite


def test_envelope_takes_the_best_of_schedules_with_the_same_full_steps():
    pts = [(8, 30.2), (8, 30.6), (10, 34.9), (11, 33.2), (14, 40.7)]
    assert controller.envelope_at(pts, 8) == 30.6
    # 11 full steps are never worse than 10 on the envelope
    assert controller.envelope_at(pts, 11) == 34.9
    assert controller.envelope_at(pts, 12.5) == pytest.approx(34.9 + (40.7 - 34.9) * 1.5 / 3)
    assert controller.envelope_at(pts, 7) is None and controller.envelope_at(pts, 15) is None


def _result(model, psnr):
    cells = [{"speedup": 4.0, "full_steps": 12, "budget": 12.5, "psnr": psnr, "taylorseer_front": psnr - 1,
              "threshold_front": None, "grid_best": None, "vs_taylorseer": 1.0, "vs_threshold": None, "vs_grid": None,
              "steps_within_5pct": True}]
    rows = {k: [{"method": k, "full_steps": 12.0, "psnr": psnr}] for k in ("taylorseer", "threshold", "easycache",
                                                                          "grid", "controller")}
    return {"model": model, "cells": cells, "rows": rows}


def test_a_remeasured_model_replaces_its_result_and_the_others_keep_their_command():
    stored = {"command": "python -m benchmarks.controller --part front", "front": [_result("a", 30.0),
                                                                                   _result("b", 31.0)]}
    merged = controller.merge_front(stored, [_result("b", 35.0), _result("c", 36.0)], "cmd --models b,c")
    assert [r["model"] for r in merged] == ["a", "b", "c"]
    assert merged[0]["command"] == stored["command"] and merged[0]["cells"][0]["psnr"] == 30.0
    assert merged[1]["command"] == "cmd --models b,c" and merged[1]["cells"][0]["psnr"] == 35.0
    section = {"command": stored["command"], "conditions": 8, "machine": "test", "front": merged}
    text = "\n".join(controller.markdown(section))
    # the section's command once at the top, each re-measured model's own command under its heading
    assert text.count("cmd --models b,c") == 2 and "### a\n\n| speed-up" in text


def test_store_part_keeps_the_other_parts_and_renders_them(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "DOCS", tmp_path)
    (tmp_path / "benchmarks.json").write_text(json.dumps({"machine": "m", "commands": {"x": "keep"}, "x": [1]}))
    memory = [{"model": "FLUX.1-dev 1024x1024", "tokens": 4608, "hidden": 3072, "blocks": "19+38",
               "bytes": {"full, order 1, bf16": 4 * 2 ** 30}}]
    suite.store_part("memory", memory, "python -m benchmarks.memory --docs", "m")
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["x"] == [1] and data["commands"] == {"x": "keep", "memory": "python -m benchmarks.memory --docs"}
    md = (tmp_path / "benchmarks.md").read_text()
    assert "## Cache memory from the geometry" in md and "| FLUX.1-dev 1024x1024 | 19+38 | 4608 | 3072 | 4.00 GiB |" in md
    variant = {"wall_clock_ratio": float("nan"), "fraction_of_bound": float("nan"), "schedule_bound": 4.17,
               "per_call_speedup": 3.9, "per_call_fraction_of_bound": 3.9 / 4.17, "cached_call_s": 0.038,
               "cached_over_full_within_run": 0.0155, "floor_bytes": {"total": 244 * 2 ** 20}, "floor_s": 0.0105,
               "floor_over_full": 0.0045, "run_full_call_s": 2.45}
    suite.store_part("cached_cost", {"machine": "m", "results": [{"family": "flux", "variants": {"after": variant}}]},
                     "python -m benchmarks.cached_cost --docs", "m")
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| flux | after | 4.17x | 3.90x | 93.5 % | n/a | n/a / 2450 ms | 38.0 ms | 1.55 % | 244 MiB, 10.5 ms | 0.45 % |" in md
    assert "## Cache memory from the geometry" in md


def test_compact_runs_merge_into_one_part_and_the_targets_are_judged_from_the_parts(tmp_path, monkeypatch):
    from benchmarks import compact
    monkeypatch.setattr(suite, "DOCS", tmp_path)
    memory = [{"model": "FLUX.1-dev 1024x1024", "tokens": 4608, "hidden": 3072, "blocks": "19+38",
               "bytes": {"full, order 1, int8": int(2.01 * 2 ** 30), "full, order 1, int8-int4": int(1.45 * 2 ** 30)}}]
    suite.store_part("memory", memory, "python -m benchmarks.memory --docs", "m")

    def run(dtype, psnr):       # what benchmarks.compact stores for one storage on one model and schedule
        cell = {"peak_cache_bytes": 2 ** 20}
        row = {"auto": dict(cell, psnr=30.0, loss_db=0.0), dtype: dict(cell, psnr=psnr, loss_db=30.0 - psnr)}
        return {"seeds": 8, "losses": {"m1": {"speed-up 4x": row}}}

    compact.write_docs(run("int8", 29.9))
    compact.write_docs(run("int8-int4", 29.8))
    part = json.loads((tmp_path / "benchmarks.json").read_text())["compact"]
    assert set(part["losses"]["m1"]["speed-up 4x"]) == {"auto", "int8", "int8-int4"}
    assert part["commands"]["int8"] == "python -m benchmarks.compact --seeds 8 --dtypes int8"
    variant = {"wall_clock_ratio": 3.96, "fraction_of_bound": 0.96, "schedule_bound": 4.17, "per_call_speedup": 4.0,
               "per_call_fraction_of_bound": 0.96, "cached_call_s": 0.038, "cached_over_full_within_run": 0.0155,
               "floor_bytes": {"total": 244 * 2 ** 20}, "floor_s": 0.0105, "floor_over_full": 0.0045,
               "run_full_call_s": 2.45}
    suite.store_part("cached_cost", {"machine": "m", "results": [{"family": "flux", "variants": {"after": variant}}]},
                     "python -m benchmarks.cached_cost --docs", "m")
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| m1 | speed-up 4x | 30.00 dB (reference), 1.0 MiB | 29.90 dB (-0.10 dB), 1.0 MiB | 29.80 dB" in md
    assert "| flux (after) | wall clock >= 95 % of the bound | 96.0 % | met |" in md
    assert "| flux (after) | cached call <= 1.5 % of a full one | 1.55 % (floor 0.45 %) | **not met** |" in md
    assert ("| FLUX.1-dev 1024x1024, cache_dtype int8 | <= 1.5 GiB at <= 0.3 dB | 2.01 GiB, worst loss 0.10 dB | "
            "**not met** |") in md
    assert ("| FLUX.1-dev 1024x1024, cache_dtype int8-int4 | <= 1.5 GiB at <= 0.3 dB | 1.45 GiB, worst loss 0.20 dB | "
            "met |") in md
