import pytest

from clusca_core.config import ClusCaConfig


def test_defaults_are_the_reference_flux_settings():
    c = ClusCaConfig()
    assert (c.fresh_interval, c.warmup_steps, c.taylor_order, c.clusters, c.propagation_ratio) == (5, 3, 1, 16, 0.005)
    assert (c.start_percent, c.end_percent, c.seed) == (0.0, 1.0, 0)
    assert c.errors() == [] and c.validated() is c


@pytest.mark.parametrize("changes,fragment", [
    (dict(fresh_interval=0), "fresh_interval"),
    (dict(clusters=-1), "clusters"),
    (dict(propagation_ratio=1.5), "propagation_ratio"),
    (dict(propagation_ratio=-0.1), "propagation_ratio"),
    (dict(start_percent=0.8, end_percent=0.2), "must not be greater than end_percent"),
    (dict(taylor_order=5), "taylor_order"),
    (dict(warmup_steps=-2), "warmup_steps"),
    (dict(propagation_ratio=float("nan")), "propagation_ratio"),
    (dict(fresh_interval=2.5), "fresh_interval"),
    (dict(kmeans_distance="cosine"), "kmeans_distance"),
])
def test_invalid_settings_have_clear_messages(changes, fragment):
    c = ClusCaConfig(**changes)
    errs = c.errors()
    assert len(errs) == 1 and fragment in errs[0]
    with pytest.raises(ValueError, match=fragment):
        c.validated()


def test_all_problems_are_reported_together():
    errs = ClusCaConfig(fresh_interval=0, clusters=-3, propagation_ratio=2.0).errors()
    assert len(errs) == 3


def test_caches_anything():
    assert ClusCaConfig().caches_anything
    assert not ClusCaConfig(fresh_interval=1).caches_anything
    assert not ClusCaConfig(start_percent=0.5, end_percent=0.5).caches_anything
