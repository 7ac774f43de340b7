"""Cache bytes of full-size models at their usual resolutions, computed from the geometry (no model is built).

The branches cached per block come from the families' own descriptions (``nodes/families``: the streams and
branches the cached steps forecast); the formula is ``clusca_core.memory.cache_bytes``, checked against the
``peak_cache_bytes`` of real runs on tiny models (tests/test_memory.py).

    .venv/bin/python -m benchmarks.memory                 # prints the table, writes out/bench/memory.json
    .venv/bin/python -m benchmarks.memory --markdown      # the table as markdown (docs/performance.md)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from devkit.comfy_env import REPO

GIB = 1024 ** 3


def geometry_from_family(family, name: str, blocks: dict, hidden: int, img_tokens: int, txt_tokens: int = 0):
    """A :class:`clusca_core.memory.ModelGeometry` from a family description (``spec.Family``): ``blocks``
    gives the number of blocks of each kind (by kind key); image tokens include any reference tokens."""
    from clusca_core.memory import BlockGroup, CachedStream, ModelGeometry
    stream_tokens = {"img": img_tokens, "txt": txt_tokens}
    groups, clustered, joined, lite = [], [], [], 0
    for kind in family.block_kinds:
        count = blocks.get(kind.key, 0)
        streams = []
        for stream in kind.streams:
            tokens = sum(stream_tokens[c] for c in kind.joint) if kind.joint else stream_tokens[stream.name]
            streams.append(CachedStream(tokens, len(stream.branches)))
            if kind.clusters and stream.clusters is not None and tokens:
                clustered.append(tokens)
        if kind.joint and count:
            joined.append(sum(stream_tokens[c] for c in kind.joint))
        if count:
            groups.append(BlockGroup(count, tuple(streams)))
            lite = streams[0].tokens
    return ModelGeometry(name, hidden, tuple(groups), tuple(clustered), tuple(joined), lite)


@dataclass(frozen=True)
class Subject:
    """A full-size model at a resolution: the family key (``nodes/families``) and the numbers that matter."""
    label: str
    family: str
    blocks: dict
    hidden: int
    img_tokens: int
    txt_tokens: int = 0


def wan_tokens(width: int, height: int, frames: int, spatial: int = 8, temporal: int = 4, patch: int = 2) -> int:
    """Video tokens of a Wan latent: ((frames - 1) / temporal + 1) x (h / spatial / patch) x (w / spatial / patch)."""
    return ((frames - 1) // temporal + 1) * (height // spatial // patch) * (width // spatial // patch)


#: image tokens of a 1024 x 1024 FLUX.1 / FLUX.2 image: (1024 / 16)^2; text: the T5 / Mistral / Qwen3 512
FLUX_1024 = 64 * 64
SUBJECTS = (
    Subject("FLUX.1-dev 1024x1024", "flux", {"double_block": 19, "single_block": 38}, 3072, FLUX_1024, 512),
    Subject("FLUX.2 dev 1024x1024", "flux2", {"double_block": 8, "single_block": 48}, 6144, FLUX_1024, 512),
    Subject("FLUX.2 Klein 9B 1024x1024", "flux2", {"double_block": 8, "single_block": 24}, 4096, FLUX_1024, 512),
    Subject("FLUX.2 Klein 4B 1024x1024", "flux2", {"double_block": 5, "single_block": 20}, 3072, FLUX_1024, 512),
    Subject("Wan 2.2 A14B 480p (832x480, 81 frames)", "wan", {"double_block": 40}, 5120, wan_tokens(832, 480, 81)),
    Subject("Wan 2.2 A14B 720p (1280x720, 81 frames)", "wan", {"double_block": 40}, 5120, wan_tokens(1280, 720, 81)),
    Subject("Wan 2.2 TI2V 5B 720p (1280x704, 81 frames)", "wan", {"double_block": 30}, 3072,
            wan_tokens(1280, 704, 81, spatial=16)),
    Subject("Wan 2.2 TI2V 5B 720p (1280x704, 121 frames)", "wan", {"double_block": 30}, 3072,
            wan_tokens(1280, 704, 121, spatial=16)),
    Subject("Wan 2.1 1.3B 480p (832x480, 33 frames)", "wan", {"double_block": 30}, 1536, wan_tokens(832, 480, 33)),
)

#: the settings of the table: (label, taylor order, cache dtype, memory mode)
SETTINGS = (
    ("full, order 1, bf16", 1, "bf16", "full"),
    ("full, order 1, fp8", 1, "fp8", "full"),
    ("full, order 1, fp8-diff", 1, "fp8-diff", "full"),
    ("full, order 1, int8", 1, "int8", "full"),
    ("full, order 1, int8-int4", 1, "int8-int4", "full"),
    ("full, order 2, bf16", 2, "bf16", "full"),
    ("full, order 1, fp32", 1, "fp32", "full"),
    ("lite, order 1, bf16", 1, "bf16", "lite"),
)


def family_spec(key: str):
    from devkit.comfy_env import pack_module
    families = pack_module("nodes.families").FAMILIES
    return next(f for f in families if f.key == key)


def table(subjects=SUBJECTS, settings=SETTINGS, clusters: int = 16) -> list[dict]:
    from clusca_core.memory import cache_bytes
    rows = []
    for s in subjects:
        geom = geometry_from_family(family_spec(s.family), s.label, s.blocks, s.hidden, s.img_tokens, s.txt_tokens)
        row = {"model": s.label, "tokens": s.img_tokens + s.txt_tokens, "hidden": s.hidden,
               "blocks": "+".join(str(v) for v in s.blocks.values()), "bytes": {}}
        for label, order, dtype, mode in settings:
            row["bytes"][label] = cache_bytes(geom, order=order, dtype=dtype, memory_mode=mode, clusters=clusters)["total"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    labels = list(rows[0]["bytes"])
    out = ["| model | blocks | tokens | hidden | " + " | ".join(labels) + " |",
           "|---|---|---|---|" + "---|" * len(labels)]
    for r in rows:
        cells = " | ".join(f"{r['bytes'][k] / GIB:.2f} GiB" for k in labels)
        out.append(f"| {r['model']} | {r['blocks']} | {r['tokens']} | {r['hidden']} | {cells} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "memory.json"))
    ap.add_argument("--docs", action="store_true", help="also write the table into docs/benchmarks.json / .md")
    args = ap.parse_args(argv)
    rows = table()
    if args.markdown:
        print(markdown(rows))
    else:
        for r in rows:
            print(r["model"] + ": " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in r["bytes"].items()))
    print("(one conditioning, batch 1, K=16 clusters; CFG doubles every number)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    if args.docs:
        import platform
        from .suite import store_part
        print("wrote", store_part("memory", rows, "python -m benchmarks.memory --docs", platform.machine()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
