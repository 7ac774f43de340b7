"""The memory-traffic floor of a cached step of full-size models, from their real ComfyUI structure built on the
``meta`` device (no weights, no memory): every cached Taylor factor read once (bf16, order 1, the memory
formula of ``clusca_core.memory``), the residual streams read and written once per block, the modulation weights
a cached step uses (with and without the partial cached modulation), and the weights of the representatives'
MLPs, all in bf16. The time is at a given memory bandwidth (default: an H100 SXM's nominal 3.35 TB/s;
``benchmarks/gpu.py`` measures the real one and the full step).

    .venv/bin/python -m benchmarks.floor [--bandwidth-tb-s 3.35]
"""

from __future__ import annotations

import argparse

import torch

from devkit.comfy_env import load_pack, pack_module

from .gpu import FLUX_DEV, WAN_14B, WAN_1_3B
from .memory import family_spec, geometry_from_family, wan_tokens


def _meta_flux():
    import comfy.supported_models as sm
    from devkit.tiny_models import flux_config
    mc = sm.Flux(flux_config(**FLUX_DEV))
    mc.set_inference_dtype(torch.bfloat16, None)
    return mc.get_model({}, device=torch.device("meta")).diffusion_model


def _meta_wan(size):
    from devkit.tiny_wan import KINDS, wan_config
    mc = KINDS["t2v"][0](wan_config("t2v", text_dim=4096, **size))
    mc.set_inference_dtype(torch.bfloat16, None)
    return mc.get_model({}, device=torch.device("meta")).diffusion_model


SUBJECTS = (
    ("FLUX.1-dev 1024x1024", "flux", _meta_flux, 4096, 512),
    ("Wan 2.1 1.3B 832x480, 33 frames", "wan", lambda: _meta_wan(WAN_1_3B), wan_tokens(832, 480, 33), 0),
    ("Wan 2.2 A14B 1280x720, 81 frames", "wan", lambda: _meta_wan(WAN_14B), wan_tokens(1280, 720, 81), 0),
)


def floor_table(bandwidth: float) -> list[dict]:
    from clusca_core.memory import cache_bytes
    from .cached_cost import traffic
    find_adapter = pack_module("nodes.adapters").find_adapter
    rows = []
    for label, family, build, n_img, n_txt in SUBJECTS:
        dm = build()
        adapter, reason = find_adapter(dm)
        if adapter is None:
            raise RuntimeError(reason)
        counts = {k.key: adapter.block_count(dm, k.key) for k in adapter.spec.block_kinds}
        hidden = _hidden(dm)
        geom = geometry_from_family(family_spec(family), label, counts, hidden, n_img, n_txt)
        summary = {"geometry": {"image tokens": n_img, "text tokens": n_txt},
                   "peak_cache_bytes": cache_bytes(geom, order=1, dtype="bf16")["total"],
                   "tokens_per_cached_step": {"img": 16}}
        row = {"model": label, "blocks": "+".join(str(c) for c in counts.values()), "hidden": hidden}
        for variant, partial in (("full modulation", False), ("partial modulation", True)):
            moved = traffic(adapter, dm, summary, 1, partial)
            row[variant] = {"bytes": moved, "ms": 1000 * moved["total"] / bandwidth}
        rows.append(row)
    return rows


def _hidden(dm) -> int:
    for name in ("hidden_size", "dim"):
        if isinstance(getattr(dm, name, None), int):
            return getattr(dm, name)
    raise ValueError("unknown hidden size")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bandwidth-tb-s", type=float, default=3.35)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    load_pack()
    rows = floor_table(args.bandwidth_tb_s * 1e12)
    if args.markdown:
        print(f"| model | cache | streams | modulation used | representatives' MLPs | total | at {args.bandwidth_tb_s} TB/s "
              "| with the full modulation |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            b = r["partial modulation"]["bytes"]
            print(f"| {r['model']} | " + " | ".join(f"{b[k] / 1e9:.2f} GB" for k in ("cache", "streams", "modulation",
                                                                                      "mlp", "total"))
                  + f" | {r['partial modulation']['ms']:.2f} ms | {r['full modulation']['bytes']['total'] / 1e9:.2f} GB, "
                  f"{r['full modulation']['ms']:.2f} ms |")
        return 0
    for r in rows:
        parts = r["partial modulation"]["bytes"]
        print(f"{r['model']} ({r['blocks']} blocks, hidden {r['hidden']}), one conditioning: "
              + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in parts.items())
              + f" -> {r['partial modulation']['ms']:.2f} ms at {args.bandwidth_tb_s} TB/s "
              f"(full modulation: {r['full modulation']['bytes']['total'] / 1e9:.2f} GB, "
              f"{r['full modulation']['ms']:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
