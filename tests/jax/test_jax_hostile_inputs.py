"""The hostile-input suite, JAX part (issue 20): a square head's kernel passed raw, and int64 class ids with x64 off."""

import numpy as np
import pytest

pytest.importorskip("jax")

import jax.numpy as jnp

import gwa
import gwa.jax as gj
import jax
from gwa._kernel import alignment as numpy_alignment

refused = pytest.mark.hostile("refused")
accepted = pytest.mark.hostile("accepted")


def _square(seed=0, n=16, k=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    kernel = rng.normal(size=(k, k)).astype(np.float32)  # Flax layout (D, C)
    y = rng.integers(0, k, n)
    return x, kernel, x @ kernel, y


@refused
def test_a_square_flax_kernel_passed_as_the_weight_is_refused_eagerly():
    x, kernel, logits, y = _square()
    with pytest.raises(
        ValueError, match=r"square weight whose transpose produced the logits.*weight_layout='DC'"
    ):
        gj.alignment(logits, y, x, kernel)


@refused
def test_a_square_weight_under_jit_needs_its_layout():
    x, kernel, logits, y = _square()
    with pytest.raises(ValueError, match=r"Expected `weight_layout='CD'` .* square head \(D == C == 5\)"):
        jax.jit(gj.alignment)(logits, y, x, kernel)


@accepted
@pytest.mark.parametrize("under_jit", [False, True])
def test_a_square_kernel_with_its_layout_scores_like_the_numpy_core(under_jit):
    x, kernel, logits, y = _square()
    expected = numpy_alignment(
        logits.astype(np.float64), y, x.astype(np.float64), kernel.T.astype(np.float64)
    )
    fn = jax.jit(gj.alignment, static_argnames="weight_layout") if under_jit else gj.alignment
    np.testing.assert_allclose(np.asarray(fn(logits, y, x, kernel, weight_layout="DC")), expected, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(fn(logits, y, x, kernel.T, weight_layout="CD")), expected, atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(gj.alignment(logits, y, x, kernel.T)), expected, atol=1e-5)  # eager


@accepted
def test_a_square_weight_with_a_bias_left_out_is_still_recognised():
    x, kernel, logits, y = _square(1)
    shifted = logits + np.arange(5, dtype=np.float32)  # the forward's bias, not passed
    gj.alignment(shifted, y, x, kernel.T)  # (C, D): accepted
    with pytest.raises(ValueError, match="transpose produced the logits"):
        gj.alignment(shifted, y, x, kernel)


@refused
def test_an_unknown_weight_layout_is_refused():
    x, kernel, logits, y = _square()
    with pytest.raises(
        ValueError, match=r"Expected `weight_layout` to be one of None, 'CD', 'DC'; got 'torch'"
    ):
        gj.alignment(logits, y, x, kernel, weight_layout="torch")


@refused
@pytest.mark.skipif(jax.config.jax_enable_x64, reason="the truncation happens with x64 off (jax's default)")
def test_int64_class_ids_beyond_int32_are_refused_not_truncated():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    y = np.array([0, 1, 2**32 + 1], dtype=np.int64)  # int32 truncation would make the last one class 1
    with pytest.raises(ValueError, match=r"class ids in \[0, 1\] .*got values in \[0, 4294967297\]"):
        gj.alignment(x @ w.T, y, x, w)
    with pytest.raises(ValueError, match=r"got values in \[0, 4294967297\]"):
        gwa.alignment(jnp.asarray(x @ w.T), y, jnp.asarray(x), jnp.asarray(w))  # through the core's dispatch


@accepted
def test_int64_class_ids_in_range_score_as_int32_ones():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
    y = np.array([0, 1, 1], dtype=np.int64)
    np.testing.assert_array_equal(
        np.asarray(gj.alignment(x @ w.T, y, x, w)),
        np.asarray(gj.alignment(x @ w.T, jnp.asarray(y, jnp.int32), x, w)),
    )
