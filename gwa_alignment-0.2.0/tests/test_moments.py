"""Streaming, mergeable moments against scipy/numpy and against exact or extended-precision references."""

import itertools
import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gwa import Moments
from gwa._moments import EMPTY, MomentState, batch_state, merge_states

REL = 1e-9


def reference(values):
    """(mean, variance, skewness, excess kurtosis) by a corrected two-pass sum in np.longdouble."""
    x = np.asarray(values, dtype=np.longdouble)
    n = np.longdouble(x.size)
    mean = x.sum() / n
    mean += (x - mean).sum() / n
    dev = x - mean
    m2, m3, m4 = (dev**2).sum(), (dev**3).sum(), (dev**4).sum()
    return float(mean), float(m2 / n), float(np.sqrt(n) * m3 / m2**1.5), float(n * m4 / (m2 * m2) - 3)


def exact(values):
    """The same four statistics in exact rational arithmetic (skewness via its square, sign kept)."""
    x = [Fraction(float(v)) for v in values]
    n = len(x)
    mean = sum(x) / n
    m2 = sum((v - mean) ** 2 for v in x)
    m3 = sum((v - mean) ** 3 for v in x)
    m4 = sum((v - mean) ** 4 for v in x)
    skew = math.copysign(math.sqrt(float(n * m3 * m3 / m2**3)), m3)
    return float(mean), float(m2 / n), skew, float(n * m4 / (m2 * m2) - 3)


def stats_of(m: Moments):
    return m.mean, m.variance, m.skewness, m.excess_kurtosis


def assert_rel(got, want, rel=REL):
    for g, w, name in zip(got, want, ("mean", "variance", "skewness", "excess kurtosis")):
        assert abs(g - w) <= rel * abs(w), f"{name}: {g!r} vs {w!r} (rel err {abs(g - w) / abs(w):.3g})"


@pytest.mark.parametrize("n", [2, 3, 10, 1000, 100_000])
@pytest.mark.parametrize("dist", ["normal", "exponential", "uniform", "scores"])
def test_matches_scipy_and_numpy(rng, n, dist):
    x = {
        "normal": lambda: rng.normal(3.0, 2.0, n),
        "exponential": lambda: rng.exponential(size=n),
        "uniform": lambda: rng.uniform(-1, 1, n),
        "scores": lambda: np.tanh(rng.normal(0.2, 0.5, n)),
    }[dist]()
    m = Moments.from_values(x)
    assert m.n == n
    assert m.mean == pytest.approx(np.mean(x), rel=1e-13, abs=1e-15)
    assert m.variance == pytest.approx(np.var(x), rel=1e-12)
    assert m.std == pytest.approx(np.std(x), rel=1e-12)
    assert m.skewness == pytest.approx(stats.skew(x), rel=1e-10, abs=1e-12)
    assert m.excess_kurtosis == pytest.approx(stats.kurtosis(x, fisher=True, bias=True), rel=1e-10, abs=1e-12)


def test_docstring_numbers_by_hand():
    # {0.1, 0.2, 0.3, 0.4}: mean 0.25, deviations ±0.05, ±0.15: M2 = 0.05, M4 = 2 (0.05^4 + 0.15^4) = 1.025e-3.
    m = Moments()
    m.update(np.array([0.1, 0.2]))
    m.update(np.array([0.3, 0.4]))
    assert m.mean == pytest.approx(0.25, abs=1e-16)
    assert m.variance == pytest.approx(0.0125, rel=1e-14)
    assert m.excess_kurtosis == pytest.approx(4 * 1.025e-3 / 0.05**2 - 3, rel=1e-13)  # -1.36
    assert m.skewness == pytest.approx(0.0, abs=1e-13)


def test_matches_exact_rational_arithmetic_on_a_skewed_sample(rng):
    x = 1e3 + 1e-4 * rng.exponential(size=300)
    assert_rel(stats_of(Moments.from_values(x)), exact(x))
    assert_rel(reference(x), exact(x), rel=1e-12)  # the longdouble reference itself is sound


def adversarial(rng, n):
    """Offset 1e3, variance 1e-8, skewed (exponential): the classic cancellation trap for naive sums."""
    return 1e3 + 1e-4 * (rng.exponential(size=n) - 1.0)


def test_adversarial_offset_million_samples_streamed(rng):
    x = adversarial(rng, 1_000_000)
    want = reference(x)
    assert want[1] == pytest.approx(1e-8, rel=0.01)
    assert_rel(stats_of(Moments.from_values(x)), want)
    streamed = Moments()
    cuts = np.sort(rng.choice(np.arange(1, x.size), size=999, replace=False))
    for part in np.split(x, cuts):
        streamed.update(part)
    assert streamed.n == x.size
    assert_rel(stats_of(streamed), want)


def test_naive_one_pass_formula_would_fail_here(rng):
    # Shows the adversarial data is adversarial: E[x^2] - E[x]^2 loses every digit at offset 1e3, var 1e-8.
    x = adversarial(rng, 100_000)
    naive = np.mean(x * x) - np.mean(x) ** 2
    assert abs(naive - reference(x)[1]) > 1e-3 * reference(x)[1]


def shards_of(rng):
    sizes = (1, 17, 1000, 50_000)
    return [adversarial(rng, s) + shift for s, shift in zip(sizes, (3e-4, -1e-4, 0.0, 2e-5))]


def test_shards_merged_in_every_order(rng):
    shards = shards_of(rng)
    want = reference(np.concatenate(shards))
    states = [Moments.from_values(s) for s in shards]
    for order in itertools.permutations(range(4)):
        sequential = Moments()
        for i in order:
            sequential = sequential.merge(states[i])
        a, b, c, d = (states[i] for i in order)
        tree = a.merge(b).merge(c.merge(d))
        for m in (sequential, tree):
            assert m.n == sum(s.size for s in shards)
            assert_rel(stats_of(m), want)


def test_merge_and_update_agree(rng):
    shards = shards_of(rng)
    updated = Moments()
    for s in shards:
        updated.update(s)
    merged = (
        Moments.from_values(shards[0])
        .merge(Moments.from_values(shards[1]))
        .merge(Moments.from_values(shards[2]))
        .merge(Moments.from_values(shards[3]))
    )
    assert_rel(stats_of(updated), stats_of(merged), rel=1e-12)


@pytest.mark.parametrize("value", [0.1, 1 / 3, -0.7, 1e3 + 0.1, 0.0, 1.0])
@pytest.mark.parametrize("n", [1, 3, 1000, 1_000_000])
def test_constant_values_give_nan_kurtosis_without_warnings(value, n):
    x = np.full(n, value)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        one = Moments.from_values(x)
        parts = Moments()
        for part in np.array_split(x, 7):
            parts.update(part)
        for m in (one, parts):
            assert m.n == n
            assert m.mean == value
            assert m.variance == 0.0 and m.std == 0.0
            assert math.isnan(m.skewness) and math.isnan(m.excess_kurtosis)


@pytest.mark.parametrize("pair", [(0.25, 0.75), (-1.0, 1.0), (0.0, 1.0), (-3.5, 1024.0)])
def test_two_point_distribution_has_excess_kurtosis_minus_two_exactly(pair):
    x = np.repeat(pair, 500)
    m = Moments.from_values(x)
    assert m.excess_kurtosis == -2.0
    assert m.skewness == 0.0
    assert m.variance == ((pair[1] - pair[0]) / 2) ** 2


def test_two_point_distribution_merged_from_shards_and_paper_values():
    left, right = Moments.from_values(np.full(30, 0.25)), Moments.from_values(np.full(30, 0.75))
    assert left.merge(right).excess_kurtosis == -2.0
    # 50/50 {0.9, -0.1}: the decimals are inexact in binary, so -2 up to rounding.
    assert Moments.from_values(np.r_[np.full(50, 0.9), np.full(50, -0.1)]).excess_kurtosis == pytest.approx(
        -2.0, abs=1e-12
    )


def test_bernoulli_quarter_by_hand():
    # p = 1/4 on {0, 1}: excess kurtosis (1 - 6pq) / pq = -2/3, skewness (1 - 2p) / sqrt(pq) = 2 / sqrt(3).
    m = Moments.from_values([1.0, 0.0, 0.0, 0.0] * 25)
    assert m.excess_kurtosis == pytest.approx(-2 / 3, rel=1e-14)
    assert m.skewness == pytest.approx(2 / math.sqrt(3), rel=1e-14)
    assert m.variance == pytest.approx(3 / 16, rel=1e-15)


def test_empty_and_single_value():
    m = Moments()
    assert m.n == 0 and all(math.isnan(v) for v in (m.mean, m.variance, m.std, m.skewness, m.excess_kurtosis))
    m.update(np.array([]))
    assert m == Moments() and m.state == EMPTY
    m.update([2.5])
    assert (m.n, m.mean, m.variance) == (1, 2.5, 0.0) and math.isnan(m.excess_kurtosis)


def test_update_takes_any_shape(rng):
    x = rng.normal(size=(7, 3, 2))
    assert_rel(stats_of(Moments.from_values(x)), stats_of(Moments.from_values(x.ravel())), rel=0)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_and_leave_the_state_unchanged(rng, bad):
    m = Moments.from_values(rng.normal(size=10))
    before = m.state
    with pytest.raises(ValueError, match=r"Expected finite `values` in Moments.update; got NaN/Inf"):
        m.update(np.array([0.1, bad, 0.3]))
    assert m.state == before
    with pytest.raises(ValueError, match=r"finite `values`"):
        Moments.from_values([0.5, bad])


def test_merge_rejects_other_types_and_does_not_mutate(rng):
    a, b = Moments.from_values(rng.normal(size=5)), Moments.from_values(rng.normal(size=6))
    sa, sb = a.state, b.state
    c = a.merge(b)
    assert (a.state, b.state, c.n) == (sa, sb, 11)
    with pytest.raises(TypeError, match=r"`other` to be a gwa.Moments; got MomentState"):
        a.merge(sb)


def test_merge_states_with_empty_is_identity(rng):
    s = batch_state(rng.normal(size=9))
    assert merge_states(s, EMPTY) == s and merge_states(EMPTY, s) == s


def test_state_dict_round_trip(rng):
    m = Moments.from_values(adversarial(rng, 1000))
    state = json.loads(json.dumps(m.state_dict()))
    assert set(state) == {"format", "n", "mean", "m2", "m3", "m4"} and state["format"] == 1
    restored = Moments.from_state_dict(state)
    assert restored == m and restored.state == m.state
    assert Moments(m.state) == m and Moments(tuple(m.state)) == m
    more = adversarial(rng, 500)
    restored.update(more)
    m.update(more)
    assert restored == m
    assert m != m.state  # equality is between Moments only


def test_repr():
    assert repr(Moments.from_values([0.0, 1.0])) == "Moments(n=2, mean=0.5, std=0.5, excess_kurtosis=-2)"


# ---- property tests -------------------------------------------------------------------------------------

values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=60)


def assert_states_close(a: MomentState, b: MomentState, data):
    """States agree up to rounding, measured against the scale of each central sum."""
    x = np.asarray(data, dtype=np.float64)
    dev = np.abs(x - x.mean())
    assert a.n == b.n
    assert abs(a.mean - b.mean) <= 1e-12 * (np.abs(x).max() + 1e-300)
    for k, (ga, gb) in enumerate(((a.m2, b.m2), (a.m3, b.m3), (a.m4, b.m4)), start=2):
        scale = float((dev**k).sum()) + float(np.abs(x).max()) ** k * 1e-12 * x.size
        assert abs(ga - gb) <= 1e-9 * scale + 1e-300, (k, ga, gb)


@settings(max_examples=150, deadline=None)
@given(values, values, values)
def test_property_merge_is_associative_and_commutative(a, b, c):
    ma, mb, mc = (Moments.from_values(v) for v in (a, b, c))
    union = a + b + c
    left = ma.merge(mb).merge(mc)
    right = ma.merge(mb.merge(mc))
    swapped = mc.merge(ma).merge(mb)
    one_pass = batch_state(union)
    for m in (left, right, swapped):
        assert_states_close(m.state, one_pass, union)
    assert_states_close(ma.merge(mb).state, mb.merge(ma).state, a + b)


@settings(max_examples=150, deadline=None)
@given(values, st.lists(st.integers(0, 60), max_size=6))
def test_property_update_in_any_split_equals_one_pass(data, cuts):
    streamed = Moments()
    for part in np.split(np.asarray(data), sorted(min(c, len(data)) for c in cuts)):
        streamed.update(part)
    assert_states_close(streamed.state, batch_state(data), data)


def _state(**changes):
    return {"n": 2, "mean": 0.0, "m2": 1.0, "m3": 0.0, "m4": 1.0, **changes}


@pytest.mark.hostile("refused")
@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        (_state(n=-5), ValueError, r"`state\['n'\]` to be a count \(a whole number >= 0\); got -5"),
        (_state(n=2.5), ValueError, r"`state\['n'\]` to be a count .*got 2\.5"),
        (_state(mean=np.nan), ValueError, r"`state\['mean'\]` to be a finite number; got nan"),
        (_state(n="2"), ValueError, r"`state\['n'\]` to be a finite number; got '2'"),
        (_state(n=True), ValueError, r"`state\['n'\]` to be a finite number; got True"),
        (_state(m2=-1), ValueError, r"`state\['m2'\]` \(a sum of squares\) >= 0; got -1"),
        (_state(n=0, m2=0, m4=0, mean=1), ValueError, r"moments of an empty `state` \(n=0\) to be 0"),
        (_state(format=99), ValueError, r"moments state format 1; got format 99"),
        ({"n": 2}, ValueError, r"to hold n, mean, m2, m3, m4; missing mean, m2, m3, m4"),
        ([1, 2], TypeError, r"`state` to be a mapping with keys n, mean, m2, m3, m4; got list"),
    ],
)
def test_from_state_dict_refuses_states_no_stream_produces(state, error, match):
    with pytest.raises(error, match=match):
        Moments.from_state_dict(state)


@pytest.mark.hostile("refused")
@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (["a"], TypeError, r"`values` to be real numbers in Moments.update; got shape=\(1,\), dtype=<U1"),
        (
            [1e100, -1e100],
            ValueError,
            r"fourth central moment of these finite values overflows float64 .*1e\+100",
        ),
        (
            [0.1, np.nan, np.inf],
            ValueError,
            r"finite `values` in Moments.update; got NaN/Inf \(2 value\(s\)\)",
        ),
    ],
)
def test_update_errors_say_what_was_wrong(values, error, match):
    m = Moments.from_values([0.1, 0.2])
    with pytest.raises(error, match=match):
        m.update(values)
    assert m.n == 2  # unchanged


def test_a_state_of_the_wrong_length_is_a_clear_error():
    with pytest.raises(TypeError, match=r"MomentState \(n, mean, m2, m3, m4\); got 2 value\(s\)"):
        Moments((1, 2))
