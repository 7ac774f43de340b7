"""The named presets per model family, in one table that the node and the benchmarks both read.

quality / balanced / fast are error-adaptive schedules whose thresholds were measured per family on its
reference model (``python -m benchmarks.suite --part fidelity --part presets``, ``docs/benchmarks.md``);
they apply on top of the family's reference settings. A family without measured presets has none: the node
then says so and uses its inputs as given.
"""

from __future__ import annotations

#: family key -> (quality, balanced, fast) thresholds of the error-adaptive schedule
ADAPTIVE_THRESHOLDS = {
    "flux": (0.05, 0.08, 0.12),
    "hunyuan_video": (0.03, 0.05, 0.08),
    "dit": (0.03, 0.05, 0.08),
    # python -m benchmarks.suite --part fidelity --seeds 8 --intervals 3,4,5,6,7 --models qwen_image_shapes:
    # 2.58x / 3.92x / 4.88x at 38.3 / 33.8 / 31.4 dB
    "qwen_image": (0.05, 0.08, 0.12),
    # python -m benchmarks.suite --part presets --seeds 8 --models qwen_image_shapes,wan_shapes: Wan 2.50x / 3.36x /
    # 4.21x at 29.1 / 27.7 / 27.4 dB (TaylorSeer N=3: 2.78x at 24.4 dB)
    "wan": (0.03, 0.05, 0.08),
}
#: family key -> (quality, balanced, fast) speed-ups of the speed-up controller with the basic node's settings:
#: for families whose error-threshold schedule does not span the speed-ups. FLUX.2: thresholds 0.03-0.08 all
#: spend 24-26 of 50 full steps and 0.12 spends 15 (32.5 dB); the presets give 42.8 / 38.9 / 33.4 dB at 2.94 /
#: 4.17 / 5.00x (python -m benchmarks.suite --part presets --seeds 8 --models flux2_shapes)
CONTROLLER_SPEEDUPS = {
    "flux2": (3.0, 4.0, 5.0),
}
PRESET_NAMES = ("quality", "balanced", "fast")


def presets_for(family_key: str) -> dict:
    """{preset name: settings} of a family (empty when none were measured). A preset with ``target_speedup``
    runs the basic node's settings at that speed-up (``nodes.settings.legacy_settings``)."""
    speedups = CONTROLLER_SPEEDUPS.get(family_key)
    if speedups is not None:
        return {name: {"target_speedup": x, "adaptive_threshold": 0.0} for name, x in zip(PRESET_NAMES, speedups)}
    thresholds = ADAPTIVE_THRESHOLDS.get(family_key)
    if thresholds is None:
        return {}
    return {name: {"mode": "clusca", "adaptive_threshold": t, "target_speedup": 0.0}
            for name, t in zip(PRESET_NAMES, thresholds)}


#: family key -> settings around the speed-up controller that differ from ``nodes.settings.BEST`` (measured on
#: the family's reference model, docs/benchmarks.md). The basic ClusCa node applies them; the advanced node
#: runs its inputs as given. Qwen-Image: the representatives' refresh costs ~3 dB against TaylorSeer's forecast
#: at the same schedule, so they only measure the error there (mode probe); Taylor order 2 and one warm-up step
#: with late runs of full steps: 43.7 / 38.7 / 35.2 / 31.5 dB at 3 / 4 / 5 / 6x against 41.1 / 36.9 / 31.6 / 29.2
#: with order 1, two warm-up steps and no late runs (8 conditions; on 8 other conditions +1.1 to +3.2 dB). FLUX.2:
#: the last step full, probe and order 2: 38.7 / 36.9 / 33.8 / 31.5 dB against 31.9 / 29.8 / 29.0 / 27.2 without
#: them (8 conditions other than the benchmark's; last step full alone +2.3 to +5.9 dB, late runs and one warm-up
#: step no better). DiT and HunyuanVideo: one warm-up step instead of two, +0.8 to +5.8 dB at 4-6x and about
#: -2.2 dB at 3x (4 conditions).
BEST_BY_FAMILY: dict = {"qwen_image": {"mode": "probe", "warmup_steps": 1, "taylor_order": 2},
                        "flux2": {"mode": "probe", "taylor_order": 2},
                        "dit": {"warmup_steps": 1}, "hunyuan_video": {"warmup_steps": 1}}


def best_for(family_key: str) -> dict:
    """The family's measured deviations from the generic best settings of the speed-up controller."""
    return dict(BEST_BY_FAMILY.get(family_key, {}))


#: family key -> the reference model whose measured error profile the speed-up controller starts from
#: (``python -m benchmarks.controller --part profile``; ``clusca_core.schedule.ErrorPrior``). Families without a
#: reference model of their own borrow the profile of the nearest one (same block design or modality), marked
#: as borrowed in the README; the controller scales it to the errors each run measures.
ERROR_PRIOR_SOURCE = {
    "flux": "flux_shapes", "flux2": "flux2_shapes", "chroma": "flux_shapes", "chroma_radiance": "flux_shapes",
    "ovis_image": "flux_shapes", "longcat_image": "flux_shapes",
    "qwen_image": "qwen_image_shapes", "z_image": "qwen_image_shapes", "lumina2": "qwen_image_shapes",
    "z_image_pixel": "qwen_image_shapes",
    "hunyuan_video": "hunyuan_video_shapes", "wan": "wan_shapes", "wan_vace": "wan_shapes",
    "wan_camera": "wan_shapes", "wan_animate": "wan_shapes", "ltxv": "hunyuan_video_shapes",
    "dit": "dit_shapes",
}

#: reference model -> (mean error one step after a full step over ten equal parts of a 50-step run, growth with
#: the distance from the last full step, whether the run's last step is full, whether late full steps may follow
#: each other: ``clusca_core.schedule.ErrorPrior``); the first two from
#: ``python -m benchmarks.controller --part profile --conditions 4`` (simple scheduler, euler, CFG 4), the last
#: two from the controller with and without them on the reference model (4 conditions; the closing note of the
#: session that measured them): last step full +1 to +4.6 dB on Qwen-Image, +2.3 to +5.9 dB on FLUX.2 (8
#: conditions), -0.5 to -5 dB on FLUX and DiT; late
#: runs +1 to +6 dB on HunyuanVideo at 3-5x, -3 dB on DiT at 3x; Wan (8 conditions) +6.9 / +2.7 / +1.7 dB at 3 / 4 / 5x.
#: An optional fifth entry: the share of the budget run in full at the end (``ErrorPrior.final_share``). FLUX.2:
#: 0.3, picked on 8 conditions other than the benchmark's (``python -m benchmarks.controller --part front
#: --only-controller --first-condition 8 --conditions 8 --models flux2_shapes`` with each share here): shares
#: 0 / 0.2 / 0.3 / 0.4 / 0.5 gave 38.7 / 42.8 / 40.8 / 41.3 / 39.9 dB at 3x, 35.2 / 35.7 / 35.8 / 34.7 / 33.2 dB
#: averaged over 3-6x. HunyuanVideo (with its late runs): 0.3 too, the same way: shares 0 / 0.15 / 0.3 / 0.4 / 0.5
#: gave 39.1 / 40.1 / 40.3 / 40.3 / 40.3 dB at 3x, 33.2 / 34.3 / 34.5 / 34.4 / 34.0 dB averaged over 3-6x. Qwen-Image:
#: none (shares 0 / 0.2 / 0.3 gave 37.6 / 36.9 / 35.9 dB averaged over 3-6x on the same held-out conditions); FLUX
#: none (32.2 / 31.1 / 30.9 dB: +0.9 / +1.9 dB at 3x, -2 to -3.7 dB at 5-6x); DiT none (32.3 / 32.7 / 31.7 dB: 0.2's
#: +0.35 dB is within the spread of 8 conditions); Wan none (28.0 / 27.4 / 27.3 dB)
MEASURED_ERROR_PROFILES = {
    "flux_shapes": ((0.103, 0.0652, 0.0549, 0.0404, 0.0306, 0.036, 0.0267, 0.0323, 0.0292, 0.0434), 0.266, False, False),
    "hunyuan_video_shapes": ((0.0313, 0.0346, 0.0425, 0.0407, 0.0373, 0.0539, 0.0535, 0.0715, 0.083, 0.1215), 0.286,
                             False, True, 0.3),
    "qwen_image_shapes": ((0.0555, 0.0451, 0.0454, 0.0558, 0.0419, 0.0503, 0.04, 0.0583, 0.0503, 0.062), 0.237, True,
                          True),
    "wan_shapes": ((0.0709, 0.0176, 0.0256, 0.0339, 0.0363, 0.0256, 0.0442, 0.0464, 0.05, 0.2459), 0.425, False, True),
    "flux2_shapes": ((0.1062, 0.0985, 0.0947, 0.1004, 0.1106, 0.0942, 0.1123, 0.1045, 0.0964, 0.1367), 0.7, True,
                     False, 0.3),
    "dit_shapes": ((0.0195, 0.024, 0.0194, 0.0206, 0.0132, 0.0166, 0.0162, 0.0127, 0.0204, 0.0413), 0.555, False,
                   False),
}


def error_prior_for(family_key: str):
    """The speed-up controller's prior for a family (None: no profile; the controller then expects the same error
    at every step, scaled to the errors it measures)."""
    from ..clusca_core.schedule import ErrorPrior
    source = ERROR_PRIOR_SOURCE.get(family_key, "")
    measured = MEASURED_ERROR_PROFILES.get(source)
    if measured is None:
        return None
    profile, growth, final_full, late_runs, *final_share = measured
    return ErrorPrior(tuple(profile), float(growth), source, final_full=bool(final_full), late_runs=bool(late_runs),
                      final_share=float(final_share[0]) if final_share else 0.0)
