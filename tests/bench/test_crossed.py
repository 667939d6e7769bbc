"""Crossed-seed intervals: exact values on hand-built tables, the level, and coverage by simulation."""

import numpy as np
import pytest
from scipy import stats

from gwa.bench import crossed, paired


def test_settings_interval_is_the_t_interval_of_the_per_seed_means():
    # seed means across the two settings: 1, 2, 3 -> mean 2, sd 1, t(0.975, 2) = 4.3027
    diffs = {"a": {1: 0.0, 2: 1.0, 3: 2.0}, "b": {1: 2.0, 2: 3.0, 3: 4.0}}
    interval = crossed.settings_interval(diffs)
    half = 4.302652729749464 / np.sqrt(3)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert (interval.level, interval.estimand, interval.n_settings, interval.n_seeds) == (
        0.95,
        "these settings",
        2,
        3,
    )
    narrower = crossed.settings_interval(diffs, level=0.90)
    assert narrower.high - 2.0 == pytest.approx(2.919985580355516 / np.sqrt(3))


def test_seeds_missing_from_a_setting_are_dropped_everywhere():
    diffs = {"a": {1: 0.0, 2: 1.0, 3: 2.0, 4: 50.0}, "b": {1: 2.0, 2: 3.0, 3: 4.0}}
    assert crossed.settings_interval(diffs).mean == pytest.approx(2.0)
    assert crossed.settings_interval({}).format() == "–"


def test_the_shared_seed_effect_cancels_in_the_settings_interval_but_not_in_the_nested_bootstrap():
    # each seed shifts every setting by the same amount: the per-seed means vary, the within-seed contrast not
    seed_effect = {1: -3.0, 2: 0.0, 3: 3.0, 4: 1.0, 5: -1.0}
    diffs = {s: {k: base + e for k, e in seed_effect.items()} for s, base in (("a", 1.0), ("b", 3.0))}
    t = crossed.settings_interval(diffs)
    per_seed = np.array([2.0 + e for e in seed_effect.values()])
    half = stats.t.ppf(0.975, 4) * per_seed.std(ddof=1) / np.sqrt(5)
    assert (t.low, t.high) == pytest.approx((2.0 - half, 2.0 + half))


def test_family_interval_matches_the_two_way_anova_formula():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(3, 6)) + np.arange(3)[:, None]
    diffs = {s: dict(enumerate(d[s])) for s in range(3)}
    interval = crossed.family_interval(diffs)
    grand = d.mean()
    ms_s = 6 * ((d.mean(axis=1) - grand) ** 2).sum() / 2
    ms_k = 3 * ((d.mean(axis=0) - grand) ** 2).sum() / 5
    resid = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + grand
    ms_e = (resid**2).sum() / 10
    combo = max(ms_s + ms_k - ms_e, ms_e)
    df = combo**2 / (ms_s**2 / 2 + ms_k**2 / 5 + ms_e**2 / 10)
    half = stats.t.ppf(0.975, df) * np.sqrt(combo / 18)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((grand, grand - half, grand + half))


def test_the_old_two_level_bootstrap_reports_the_level_it_is_asked_for():
    # 200 seeds of one setting, a near-normal bootstrap distribution: its 95% interval is 1.96 standard errors
    # wide each side (a 90% interval would be 1.64: the ratio 1.19 is far outside the Monte Carlo error)
    v = np.random.default_rng(0).normal(size=200)
    _, low, high = paired.two_level_bootstrap({"a": v}, resamples=20_000)
    se = v.std(ddof=0) / np.sqrt(v.size)
    assert (high - low) / 2 / se == pytest.approx(1.96, abs=0.06)


def test_seed_bootstrap_resamples_seeds_jointly():
    seed_effect = {1: -3.0, 2: 0.0, 3: 3.0, 4: 1.0, 5: -1.0}
    diffs = {s: {k: base + e for k, e in seed_effect.items()} for s, base in (("a", 1.0), ("b", 3.0))}
    boot = crossed.seed_bootstrap(diffs, resamples=4000)
    per_seed = np.array([2.0 + e for e in seed_effect.values()])
    draws = np.random.default_rng(crossed.SEED).integers(0, 5, size=(4000, 5))
    expected = np.quantile(per_seed[draws].mean(axis=1), [0.025, 0.975])
    assert (boot.low, boot.high) == pytest.approx(tuple(expected))


@pytest.mark.parametrize("n_seeds", [5, 10])
@pytest.mark.parametrize("n_settings", [2, 4, 12])
def test_crossed_interval_covers_at_its_nominal_level(n_settings, n_seeds):
    # A crossed synthetic design with a strong shared seed effect (sd 1.5 against a residual of 0.5): the nominal
    # 95% interval for "these settings" must cover >= 0.93 (2000 replicates: Monte Carlo sd 0.005)
    cover = crossed.coverage(
        "settings_t", n_settings=n_settings, n_seeds=n_seeds, replicates=2000, seed=n_seeds
    )
    assert cover >= 0.93


def test_per_setting_t_covers_at_five_seeds_where_the_percentile_bootstrap_does_not():
    t = crossed.coverage("setting_t", n_settings=1, n_seeds=5, replicates=3000, seed=1)
    boot = crossed.coverage("setting_bootstrap", n_settings=1, n_seeds=5, replicates=3000, seed=1)
    assert t >= 0.93 and boot < 0.88


def test_family_interval_covers_with_four_settings_and_ten_seeds():
    assert crossed.coverage("family", n_settings=4, n_seeds=10, replicates=2000, seed=2) >= 0.93


def test_bad_level_and_method_name_the_argument():
    with pytest.raises(ValueError, match=r"Expected `level` in \(0, 1\); got 95"):
        crossed.settings_interval({"a": {1: 0.0, 2: 1.0}}, level=95)
    with pytest.raises(ValueError, match="Expected `method` to be one of"):
        crossed.coverage("nested", n_settings=2, n_seeds=5)
