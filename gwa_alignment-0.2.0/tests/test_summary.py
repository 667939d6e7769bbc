"""The paper's Eq. 2 verbatim (gwa_value), gwa's default value (pearson_ratio) and the guarded epoch summary
(summarize, EpochSummary, Guard)."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

import gwa
from gwa import EpochSummary, Guard, GuardCode, Moments, gwa_value, pearson_ratio, summarize

FIELDS = [
    "n",
    "n_undefined",
    "mean",
    "std",
    "excess_kurtosis",
    "gwa",
    "gwa_paper",
    "denominator",
    "guard",
    "beta",
]
METRIC_KEYS = [
    "align_mean",
    "align_std",
    "align_excess_kurtosis",
    "gwa",
    "gwa_paper",
    "gwa_paper_flagged",
    "gwa_guard",
    "gwa_guard_message",
    "n_scores",
    "n_undefined",
]


def paper(s, beta=1.2):
    """The paper code's expression."""
    return np.mean(s) / (stats.kurtosis(s) + beta)


@pytest.mark.parametrize("seed", range(5))
def test_gwa_value_is_the_paper_expression(seed):
    rng = np.random.default_rng(seed)
    s = np.tanh(rng.normal(rng.uniform(-0.5, 0.5), rng.uniform(0.05, 1.0), size=rng.integers(10, 5000)))
    assert gwa_value(s) == pytest.approx(paper(s), rel=1e-10)
    assert gwa_value(Moments.from_values(s)) == pytest.approx(paper(s), rel=1e-10)
    assert gwa_value(s, beta=3.0) == pytest.approx(paper(s, 3.0), rel=1e-10)


def test_bimodal_paper_example_is_minus_one_half():
    # mean 0.4, excess kurtosis -2: 0.4 / (-2 + 1.2) = -0.5. Noise makes GWA flip sign.
    s = np.r_[np.full(50, 0.9), np.full(50, -0.1)]
    assert gwa_value(s) == pytest.approx(-0.5, abs=1e-12)
    assert paper(s) == pytest.approx(-0.5, abs=1e-12)


def test_discrete_uniform_scores_sit_past_the_pole():
    # k equally spaced points have excess kurtosis -6 (k^2 + 1) / (5 (k^2 - 1)), so Eq. 2 gives
    # mean / (1.2 (1 - (k^2 + 1) / (k^2 - 1))) = -mean (k^2 - 1) / 2.4: negative, growing with k.
    for k, expected in ((11, -25.0), (101, -2125.0)):
        s = np.linspace(0.0, 1.0, k)
        assert gwa_value(s) == pytest.approx(expected, rel=1e-9)
    # A large continuous uniform sample: kurtosis ~ -1.2, the denominator ~ 0, GWA amplifies the mean wildly.
    s = np.random.default_rng(0).uniform(0.0, 1.0, 100_000)
    assert abs(gwa_value(s)) > 20 * abs(np.mean(s))


def test_exact_pole_gives_signed_infinity_or_nan():
    pair = np.repeat([0.25, 0.75], 10)  # excess kurtosis exactly -2
    assert gwa_value(pair, beta=2.0) == math.inf
    assert gwa_value(-pair, beta=2.0) == -math.inf
    assert math.isnan(gwa_value(np.repeat([-1.0, 1.0], 10), beta=2.0))  # 0 / 0
    assert gwa_value(pair, beta=2.5) == pytest.approx(0.5 / 0.5)


def test_gwa_value_nan_for_empty_or_constant_scores():
    assert math.isnan(gwa_value(np.array([])))
    assert math.isnan(gwa_value(np.full(10, 0.3)))


def test_gwa_value_rejects_nan_scores():
    with pytest.raises(ValueError, match=r"finite `values`"):
        gwa_value(np.array([0.1, np.nan, 0.2]))


@pytest.mark.parametrize("beta", [0, 0.0, -1.2, math.nan, math.inf, "1.2", None])
def test_beta_must_be_positive_and_finite(beta):
    with pytest.raises(ValueError, match=re.escape(f"`beta` to be a positive finite number; got {beta!r}.")):
        gwa_value(np.array([0.1, 0.2, 0.4]), beta=beta)
    with pytest.raises(ValueError, match=r"`beta` to be a positive finite number"):
        summarize(np.array([0.1, 0.2, 0.4]), beta=beta)


def test_summarize_fields_against_scipy(rng):
    s = np.tanh(rng.normal(0.3, 0.4, 777))
    out = summarize(s, n_undefined=5)
    assert [f.name for f in dataclasses.fields(EpochSummary)] == FIELDS
    assert out.n == 777 and out.n_undefined == 5 and out.beta == gwa.PAPER_BETA == 1.2
    assert out.mean == pytest.approx(np.mean(s), rel=1e-13)
    assert out.std == pytest.approx(np.std(s), rel=1e-12)
    assert out.excess_kurtosis == pytest.approx(stats.kurtosis(s), rel=1e-10)
    assert out.denominator == pytest.approx(stats.kurtosis(s) + 1.2, rel=1e-10)
    assert out.gwa_paper == pytest.approx(paper(s), rel=1e-10)
    # gwa's default value: the mean over the Pearson kurtosis (excess + 3).
    assert out.gwa == pytest.approx(np.mean(s) / (stats.kurtosis(s) + 3.0), rel=1e-10)
    assert out.gwa == pearson_ratio(out.mean, out.excess_kurtosis)
    assert out.gwa != pytest.approx(out.gwa_paper, rel=1e-3)
    assert out.guard is None and not out.flagged and out.gwa_paper_or_nan == out.gwa_paper
    assert summarize(Moments.from_values(s), n_undefined=5) == out
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.gwa = 0.0


def test_guard_no_scores():
    out = summarize(np.array([]))
    assert out.guard == Guard(GuardCode.NO_SCORES, "no scores") and out.flagged and out.n == 0
    assert math.isnan(out.gwa_paper_or_nan) and math.isnan(out.mean) and math.isnan(out.gwa)


def test_guard_constant_scores():
    out = summarize(np.zeros(20), n_undefined=20)  # e.g. every cosine undefined
    assert out.guard == Guard(GuardCode.CONSTANT_SCORES, "constant scores: kurtosis undefined")
    assert out.n_undefined == 20 and out.std == 0.0 and math.isnan(out.gwa_paper_or_nan)
    assert math.isnan(out.gwa)  # the default value needs the kurtosis too


def test_guard_kurtosis_pole_message_and_verbatim_value():
    out = summarize(np.r_[np.full(50, 0.9), np.full(50, -0.1)])
    assert out.guard.code is GuardCode.KURTOSIS_POLE and out.guard.code.value == "kurtosis_pole"
    assert out.guard.message == (
        "kurtosis pole: excess kurtosis -2 + beta 1.2 = -0.8 <= 0.1 (flat or bimodal scores)"
    )
    assert str(out.guard) == out.guard.message
    assert out.flagged and out.gwa_paper == pytest.approx(
        -0.5, abs=1e-12
    )  # the verbatim value is still reported
    assert math.isnan(out.gwa_paper_or_nan)
    # The default value has no pole: 0.4 / (-2 + 3), the mean itself for two point masses.
    assert out.gwa == pytest.approx(0.4, abs=1e-12)


def test_guard_threshold_is_inclusive():
    pair = np.repeat([0.25, 0.75], 10)  # kurtosis exactly -2, so the denominator is exactly beta - 2
    assert summarize(pair, beta=2.5, min_denominator=0.5).flagged
    assert not summarize(pair, beta=2.5, min_denominator=0.49).flagged
    assert summarize(pair, beta=2.5, min_denominator=0.49).gwa_paper_or_nan == 1.0


def test_as_dict_is_json_safe_in_every_case(rng):
    cases = [
        np.array([]),
        np.zeros(4),
        np.repeat([-1.0, 1.0], 3),
        np.repeat([0.25, 0.75], 3),
        rng.normal(0.1, 0.3, 50),
    ]
    for scores in cases:
        for beta in (1.2, 2.0):  # beta 2 puts the two-point cases exactly on the pole (inf, nan)
            out = summarize(scores, beta=beta)
            d = out.as_dict()
            assert list(d) == [*FIELDS, "flagged"]
            assert d["flagged"] == out.flagged
            assert d["guard"] == (None if out.guard is None else out.guard.code.value)
            round_trip = json.loads(json.dumps(d, allow_nan=False))
            assert round_trip == d
            for key in ("mean", "std", "excess_kurtosis", "denominator", "gwa", "gwa_paper"):
                value = getattr(out, key)
                assert d[key] == (value if math.isfinite(value) else None)
    inf_case = summarize(np.repeat([0.25, 0.75], 3), beta=2.0)
    assert inf_case.gwa_paper == math.inf and inf_case.as_dict()["gwa_paper"] is None
    assert inf_case.gwa == pytest.approx(0.5) and inf_case.as_dict()["gwa"] == pytest.approx(0.5)


def test_pearson_ratio_is_bounded_and_pole_free(rng):
    # The Pearson kurtosis m4 / m2**2 is >= 1 and the mean of scores in [-1, 1] lies in [-1, 1]: so does the ratio.
    for _ in range(50):
        s = np.clip(rng.normal(rng.uniform(-1, 1), rng.uniform(0.01, 1.0), 200), -1, 1)
        out = summarize(s)
        assert -1.0 <= out.gwa <= 1.0
        assert out.gwa == pytest.approx(np.mean(s) / (stats.kurtosis(s) + 3.0), rel=1e-9)
    assert pearson_ratio(0.4, -2.0) == pytest.approx(0.4)
    assert math.isnan(pearson_ratio(math.nan, 0.0)) and math.isnan(pearson_ratio(0.1, math.nan))


@pytest.mark.parametrize(
    "scores",
    [np.array([]), np.zeros(5), np.r_[np.full(50, 0.9), np.full(50, -0.1)], np.linspace(-0.2, 0.8, 31)],
)
def test_metrics_are_the_run_directory_keys(scores):
    out = summarize(scores, n_undefined=2)
    row = out.metrics()
    assert list(row) == METRIC_KEYS
    assert json.loads(json.dumps(row, allow_nan=False)) == row
    for key, attr in (
        ("align_mean", "mean"),
        ("align_std", "std"),
        ("align_excess_kurtosis", "excess_kurtosis"),
        ("gwa", "gwa"),
        ("gwa_paper", "gwa_paper"),
    ):
        value = getattr(out, attr)
        assert row[key] == (value if math.isfinite(value) else None), key
    assert row["gwa_paper_flagged"] is out.flagged
    assert row["gwa_guard"] == (None if out.guard is None else out.guard.code.value)
    assert row["gwa_guard_message"] == (None if out.guard is None else out.guard.message)
    assert row["n_scores"] == scores.size and row["n_undefined"] == 2
