"""The two-level paired bootstrap of the protocol on hand-built differences."""

import numpy as np
import pytest

from gwa.bench import paired


def test_constant_differences_give_a_degenerate_interval():
    assert paired.two_level_bootstrap({"a": [0.5] * 5, "b": [0.5] * 3}) == pytest.approx((0.5, 0.5, 0.5))


def test_pooled_mean_weights_settings_not_seeds():
    diffs = {"a": [1.0, 1.0, 1.0, 1.0], "b": [-1.0]}
    assert paired.pooled_mean(diffs) == 0.0
    mean, low, high = paired.two_level_bootstrap(diffs, resamples=4000)
    # only settings vary between resamples here: the pooled mean is -1, 0 or +1 with probabilities 1/4, 1/2, 1/4
    assert mean == 0.0 and low == -1.0 and high == 1.0


def test_seed_variation_within_one_setting_matches_the_plain_bootstrap():
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    mean, low, high = paired.two_level_bootstrap({"only": v}, resamples=20000)
    rng = np.random.default_rng(0)
    plain = v[rng.integers(0, 5, (20000, 5))].mean(axis=1)
    assert mean == 2.0
    assert low == pytest.approx(np.quantile(plain, 0.025), abs=0.25)
    assert high == pytest.approx(np.quantile(plain, 0.975), abs=0.25)
    assert paired.format_interval((mean, low, high)).startswith("+2.00 [")


def test_empty_and_deterministic():
    assert np.isnan(paired.two_level_bootstrap({})[0])
    assert paired.format_interval(paired.two_level_bootstrap({})) == "–"
    d = {"a": [0.1, -0.3, 0.2], "b": [1.0, 0.4, 0.0], "c": [-0.5, -0.2, 0.1]}
    assert paired.two_level_bootstrap(d) == paired.two_level_bootstrap(d)
    wide = {k: list(np.random.default_rng(i).normal(0, 1, 5)) for i, k in enumerate("abcdef")}
    assert paired.two_level_bootstrap(wide, resamples=500, seed=1) != paired.two_level_bootstrap(
        wide, resamples=500, seed=2
    )
