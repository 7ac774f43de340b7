"""Interleaved side-by-side timing of sampling variants in one process."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Run every variant ``repeats`` times, alternating (A B A B ...), and return the wall-clock times.
    Alternating spreads machine noise evenly over the variants; ratios are taken on medians."""
    if warmup:
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(path, results: list) -> str:
    """A benchmark's results as JSON, with the machine they were measured on (returned)."""
    import torch
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(f"results in {out}")
    return machine
