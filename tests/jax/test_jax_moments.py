"""gwa.jax streaming moments against the numpy core and scipy."""

import pytest

pytest.importorskip("jax")

import jax.numpy as jnp
import numpy as np
from scipy import stats

import gwa
import gwa.jax as gj
import jax


def _scores(seed, n=500):
    rng = np.random.default_rng(seed)
    # Skewed, heavy-ish tailed and off-centre, like late-training alignment scores.
    return np.clip(0.3 + 0.2 * rng.standard_t(5, size=n), -1, 1)


def _stream(values, sizes, dtype=None):
    step = jax.jit(gj.moments_update)
    state = gj.moments_init(dtype)
    for chunk in np.split(values, np.cumsum(sizes)[:-1]):
        state = step(state, jnp.asarray(chunk))
    return state


def _assert_close(m, values, rtol):
    assert m.n == len(values)
    np.testing.assert_allclose(m.mean, np.mean(values), rtol=rtol)
    np.testing.assert_allclose(m.variance, np.var(values), rtol=rtol)
    np.testing.assert_allclose(m.skewness, stats.skew(values), rtol=rtol)
    np.testing.assert_allclose(m.excess_kurtosis, stats.kurtosis(values), rtol=rtol)


@pytest.mark.slow  # jit compilation
def test_float64_stream_under_jit_matches_scipy_and_core():
    values = _scores(0)
    with jax.enable_x64(True):
        state = _stream(values, [100, 37, 200, 163], jnp.float64)
        assert state.mean.dtype == jnp.float64
        m = gj.to_moments(state)
    _assert_close(m, values, rtol=1e-10)
    core = gwa.Moments.from_values(values)
    np.testing.assert_allclose(np.array(m.state), np.array(core.state), rtol=1e-10)


def test_float32_stream_matches_scipy():
    values = _scores(1, n=2000).astype(np.float32)
    m = gj.to_moments(_stream(values, [128] * 15 + [80]))
    assert gj.moments_init().mean.dtype == jnp.float32
    _assert_close(m, values.astype(np.float64), rtol=1e-5)


@pytest.mark.slow  # jit compilation
def test_mask_excludes_entries_even_nan_padding():
    values = _scores(2, n=64)
    mask = np.arange(64) % 3 != 0
    padded = np.where(mask, values, np.nan)
    with jax.enable_x64(True):
        m = gj.to_moments(gj.moments_update(gj.moments_init(), jnp.asarray(padded), jnp.asarray(mask)))
    _assert_close(m, values[mask], rtol=1e-10)
    empty = gj.moments_of(jnp.asarray(padded), jnp.zeros(64, bool))
    assert gj.to_moments(empty).n == 0


@pytest.mark.slow  # jit compilation
def test_merge_equals_union_and_empty_sides_are_exact():
    a, b = _scores(3, n=70), _scores(4, n=30) - 0.5
    with jax.enable_x64(True):
        sa, sb = gj.moments_of(jnp.asarray(a)), gj.moments_of(jnp.asarray(b))
        merged = gj.to_moments(jax.jit(gj.moments_merge)(sa, sb))
        empty = gj.moments_init()
        assert gj.to_moments(gj.moments_merge(sa, empty)).state == gj.to_moments(sa).state
        assert gj.to_moments(gj.moments_merge(empty, sb)).state == gj.to_moments(sb).state
        assert gj.to_moments(gj.moments_merge(empty, empty)).n == 0
    _assert_close(merged, np.r_[a, b], rtol=1e-10)


@pytest.mark.slow  # jit compilation
def test_to_moments_merges_a_leading_device_axis_on_the_host():
    parts = [_scores(5, n=40), _scores(6, n=25) + 0.2, _scores(7, n=10)]
    with jax.enable_x64(True):
        states = [gj.moments_of(jnp.asarray(p)) for p in parts]
        stacked = jax.tree.map(lambda *v: jnp.stack(v), *states)
        m = gj.to_moments(stacked)
    _assert_close(m, np.concatenate(parts), rtol=1e-10)


def test_from_moments_round_trip_resumes_an_epoch():
    values = _scores(8, n=90)
    with jax.enable_x64(True):
        host = gwa.Moments.from_values(values[:50])
        state = gj.moments_update(gj.from_moments(host), jnp.asarray(values[50:]))
        m = gj.to_moments(state)
    _assert_close(m, values, rtol=1e-10)


def test_summarize_accepts_the_converted_moments():
    values = _scores(9)
    summary = gwa.summarize(gj.to_moments(gj.moments_of(jnp.asarray(values, jnp.float32))))
    np.testing.assert_allclose(summary.gwa_paper, np.mean(values) / (stats.kurtosis(values) + 1.2), rtol=1e-5)
    np.testing.assert_allclose(summary.gwa, np.mean(values) / (stats.kurtosis(values) + 3.0), rtol=1e-5)


def test_errors():
    with pytest.raises(
        ValueError, match=r"Expected `mask` to have the shape of `scores` \(4,\); got shape=\(3,\)"
    ):
        gj.moments_of(jnp.zeros(4), jnp.ones(3, bool))
    with pytest.raises(
        TypeError, match=r"Expected `mask` to be a boolean array; got shape=\(4,\), dtype=int32"
    ):
        gj.moments_of(jnp.zeros(4), jnp.ones(4, jnp.int32))
    with pytest.raises(TypeError, match=r"Expected `dtype` to be a floating dtype"):
        gj.moments_init(jnp.int32)
    with pytest.raises(TypeError, match=r"Expected `state` to be a gwa.jax.MomentsState; got tuple"):
        gj.to_moments((1.0, 0.0, 0.0, 0.0, 0.0))
    with pytest.raises(TypeError, match=r"Expected `moments` to be a gwa.Moments; got list"):
        gj.from_moments([1.0])
    bad = gj.MomentsState(*(jnp.zeros((2, 2)),) * 5)
    with pytest.raises(ValueError, match=r"Expected `state` fields to be scalars or one per device"):
        gj.to_moments(bad)
    nan_state = gj.moments_update(gj.moments_init(), jnp.array([0.1, jnp.nan]))
    with pytest.raises(ValueError, match=r"Expected finite moments in `state`; got NaN/Inf"):
        gj.to_moments(nan_state)
