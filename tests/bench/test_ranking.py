"""Kendall's tau over group means with a bootstrap over each group's runs, on hand-built cases."""

import math

import numpy as np
import pytest
from scipy import stats

from gwa.bench.ranking import kendall_tau_interval


def test_identical_seeds_give_a_degenerate_interval_at_the_exact_tau():
    stat = {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3, "d": [4.0] * 3}
    agree = kendall_tau_interval(
        stat, {"a": [0.1] * 3, "b": [0.2] * 3, "c": [0.3] * 3, "d": [0.4] * 3}, resamples=200
    )
    assert (agree.tau, agree.low, agree.high, agree.groups) == (1.0, 1.0, 1.0, 4)
    reverse = kendall_tau_interval(
        stat, {"a": [0.4] * 3, "b": [0.3] * 3, "c": [0.2] * 3, "d": [0.1] * 3}, resamples=200
    )
    assert (reverse.tau, reverse.low, reverse.high) == (-1.0, -1.0, -1.0)
    # one discordant pair of six: tau = (5 - 1) / 6
    swap = kendall_tau_interval(
        stat, {"a": [0.1] * 3, "b": [0.3] * 3, "c": [0.2] * 3, "d": [0.4] * 3}, resamples=200
    )
    assert swap.tau == pytest.approx(4 / 6) and swap.low == swap.high == pytest.approx(4 / 6)
    assert swap.pvalue == pytest.approx(stats.kendalltau([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]).pvalue)
    assert swap.format() == "+0.67 [+0.67, +0.67]"


def test_the_tau_is_over_group_means_and_the_interval_follows_seed_noise():
    # b's two seeds straddle c's: its mean (2.0) ranks below c (3.0), but a resample of b's runs can lift it
    # above c, in the statistic (first seed) and the target alike, since a run's values stay paired.
    stat = {"a": [1.0, 1.0], "b": [0.0, 4.0], "c": [3.0, 3.0]}
    target = {"a": [10.0, 10.0], "b": [0.0, 40.0], "c": [30.0, 30.0]}
    r = kendall_tau_interval(stat, target, resamples=1000)
    # means: stat (1, 2, 3), target (10, 20, 30): tau 1; resampled b = (0, 0) puts it below a in both (still 1),
    # (4, 40) above c in both (still 1): paired, the ranking never disagrees.
    assert r.tau == 1.0 and r.low == r.high == 1.0
    unpaired = kendall_tau_interval(
        stat, {"a": [10.0, 10.0], "b": [40.0, 0.0], "c": [30.0, 30.0]}, resamples=1000
    )
    # now the target of b's run 1 is high where its statistic is low: resamples (b = run 1 twice) give tau -1/3
    assert unpaired.tau == 1.0 and unpaired.low == pytest.approx(-1 / 3) and unpaired.high == 1.0


def test_a_constant_column_is_undefined_not_zero():
    r = kendall_tau_interval(
        {"a": [1.0], "b": [1.0], "c": [1.0]}, {"a": [1.0], "b": [2.0], "c": [3.0]}, resamples=50
    )
    assert math.isnan(r.tau) and math.isnan(r.pvalue) and r.format() == "undefined"


def test_the_resampling_is_seeded():
    rng = np.random.default_rng(0)
    stat = {g: rng.normal(i, 1.0, 5).tolist() for i, g in enumerate("abcdef")}
    target = {g: (np.array(v) + rng.normal(0, 1.0, 5)).tolist() for g, v in stat.items()}
    first, again = (
        kendall_tau_interval(stat, target, resamples=300),
        kendall_tau_interval(stat, target, resamples=300),
    )
    assert first == again and first.resamples == 300
    assert first.tau == pytest.approx(
        stats.kendalltau([np.mean(v) for v in stat.values()], [np.mean(v) for v in target.values()]).statistic
    )
    assert -1 <= first.low < first.tau < first.high <= 1  # seed noise of this size moves the ranking


@pytest.mark.parametrize(
    ("stat", "target", "message"),
    [
        ({"a": [1], "b": [2], "c": [3]}, {"a": [1], "b": [2], "d": [3]}, "the same groups"),
        ({"a": [1], "b": [2]}, {"a": [1], "b": [2]}, "at least 3 groups to rank; got 2"),
        (
            {"a": [1, 2], "b": [2], "c": [3]},
            {"a": [1], "b": [2], "c": [3]},
            "group 'a' to have one or more runs",
        ),
        ({"a": [], "b": [2], "c": [3]}, {"a": [], "b": [2], "c": [3]}, "group 'a' to have one or more runs"),
        (
            {"a": [float("nan")], "b": [2], "c": [3]},
            {"a": [1], "b": [2], "c": [3]},
            "finite values in group 'a'",
        ),
    ],
)
def test_bad_input_names_the_group(stat, target, message):
    with pytest.raises(ValueError, match=message):
        kendall_tau_interval(stat, target)
