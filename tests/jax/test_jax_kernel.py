"""gwa.jax.alignment against the numpy core and against brute-force per-sample autograd gradients."""

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp
import numpy as np
import optax

import gwa
import gwa.jax as gj
import jax
from gwa._kernel import alignment_with_mask as numpy_alignment


def _batch(seed, n=48, c=6, d=9, soft=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    embeddings = rng.normal(size=(n, d))
    weight = rng.normal(size=(c, d))
    bias = rng.normal(size=c)
    targets = rng.dirichlet(np.ones(c), size=n) if soft else rng.integers(0, c, size=n)
    return logits, targets, embeddings, weight, bias


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_float64_under_jit_matches_numpy_core(soft, with_bias):
    logits, targets, emb, weight, bias = _batch(1, soft=soft)
    bias = bias if with_bias else None
    expected, expected_mask = numpy_alignment(logits, targets, emb, weight, bias)
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (logits, targets, emb, weight)] + [
            None if bias is None else jnp.asarray(bias)
        ]
        scores, mask = jax.jit(gj.alignment_with_mask)(*args)
        assert scores.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(scores), expected, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(np.asarray(mask), expected_mask)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_float32_under_jit_matches_numpy_core(soft, with_bias):
    logits, targets, emb, weight, bias = _batch(2, soft=soft)
    bias = bias if with_bias else None
    f32 = [
        a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int32)
        for a in (logits, targets, emb, weight)
    ]
    b32 = None if bias is None else bias.astype(np.float32)
    expected, _ = numpy_alignment(*f32, b32)  # same rounded inputs, float64 arithmetic
    scores = jax.jit(gj.alignment)(*map(jnp.asarray, f32), None if b32 is None else jnp.asarray(b32))
    assert scores.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scores), expected, rtol=0, atol=1e-5)


def _brute_force_scores(logits_fn, params, embeddings, targets, soft, with_bias):
    """cos(-grad_i, [W b]) from jax.vmap(jax.grad) of each sample's cross-entropy."""

    def loss(p, x, t):
        z = logits_fn(p, x)
        return (
            optax.softmax_cross_entropy(z, t)
            if soft
            else optax.softmax_cross_entropy_with_integer_labels(z, t)
        )

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(params, embeddings, targets)
    flat_g = jnp.concatenate(
        [grads["w"].reshape(len(targets), -1)] + ([grads["b"]] if with_bias else []), axis=1
    )
    flat_w = jnp.concatenate([params["w"].ravel()] + ([params["b"]] if with_bias else []))
    return -(flat_g @ flat_w) / (jnp.linalg.norm(flat_g, axis=1) * jnp.linalg.norm(flat_w))


@pytest.mark.slow  # jit-compiles per-sample jax.grad
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_brute_force_per_sample_gradients(soft, with_bias):
    _, targets, emb, weight, bias = _batch(3, soft=soft)
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(weight), "b": jnp.asarray(bias if with_bias else np.zeros_like(bias))}

        def logits_fn(p, x):
            return p["w"] @ x + p["b"]

        emb_j, targets_j = jnp.asarray(emb), jnp.asarray(targets)
        logits = jax.vmap(logits_fn, in_axes=(None, 0))(params, emb_j)
        expected = _brute_force_scores(logits_fn, params, emb_j, targets_j, soft, with_bias)
        got = gj.alignment(logits, targets_j, emb_j, params["w"], params["b"] if with_bias else None)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=0, atol=1e-10)


def test_confident_hard_label_keeps_the_target_entry_in_float32():
    # p_y rounds to 1 in float32; softmax - onehot would zero the target entry and flip the score's meaning.
    logits = np.array([[30.0, 0.0, 0.0], [0.0, 31.0, 1.0]], dtype=np.float32)
    emb = np.array([[1.0, 2.0], [0.5, -1.0]], dtype=np.float32)
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    targets = np.array([0, 1])
    expected, _ = numpy_alignment(logits, targets, emb, weight)
    probs = jax.nn.softmax(jnp.asarray(logits), axis=1)
    assert float(probs[0, 0]) == 1.0  # the naive difference would be 0 there
    got = jax.jit(gj.alignment)(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(emb), jnp.asarray(weight)
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)


def test_tiny_embeddings_do_not_underflow_in_float32():
    logits, targets, emb, weight, _ = _batch(4)
    args = [jnp.asarray(a, jnp.float32) for a in (logits, emb, weight)]
    base = gj.alignment(args[0], jnp.asarray(targets), args[1], args[2])
    tiny = gj.alignment(args[0], jnp.asarray(targets), args[1] * 1e-30, args[2])  # squares underflow to 0
    np.testing.assert_allclose(np.asarray(tiny), np.asarray(base), rtol=0, atol=1e-6)
    assert np.all(
        np.asarray(gj.alignment_with_mask(args[0], jnp.asarray(targets), args[1] * 1e-30, args[2])[1])
    )


@pytest.mark.parametrize("head_factor", [1e25, 1e-25])  # ||W||_F^2 would overflow / underflow in float32
@pytest.mark.parametrize("with_bias", [False, True])
def test_extreme_heads_keep_their_scores_in_float32(head_factor, with_bias):
    logits, targets, emb, weight, bias = (jnp.asarray(a, jnp.float32) for a in _batch(13))
    targets = targets.astype(jnp.int32)
    bias = bias if with_bias else None
    base = gj.alignment(logits, targets, emb, weight, bias)
    scaled = gj.alignment(
        logits, targets, emb, weight * head_factor, None if bias is None else bias * head_factor
    )
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(base), rtol=0, atol=1e-6)


def test_tiny_embeddings_with_bias_match_the_core_in_float32():
    logits, targets, emb, weight, bias = _batch(14)
    args = [np.float32(a) if a.dtype.kind == "f" else a for a in (logits, targets, emb * 1e-30, weight, bias)]
    expected, _ = numpy_alignment(*args)  # float64: no overflow of 1 / s^2 there
    got = jax.jit(gj.alignment)(*map(jnp.asarray, args))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-5)
    assert np.abs(expected).min() > 1e-3  # the bias carries the cosine: nothing collapses to 0


def test_undefined_cosines_get_the_undefined_score_and_mask():
    logits, targets, emb, weight, _ = _batch(5, n=4)
    emb[2] = 0.0
    scores, mask = gj.alignment_with_mask(*(jnp.asarray(a) for a in (logits, targets, emb, weight)))
    assert float(scores[2]) == gwa.UNDEFINED_SCORE
    np.testing.assert_array_equal(np.asarray(mask), [True, True, False, True])
    _, mask = gj.alignment_with_mask(*(jnp.asarray(a) for a in (logits, targets, emb, np.zeros_like(weight))))
    assert not np.any(np.asarray(mask))


def test_core_alignment_dispatches_jax_arrays():
    logits, targets, emb, weight, _ = _batch(6)
    got = gwa.alignment(*(jnp.asarray(a) for a in (logits, targets, emb, weight)))
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), numpy_alignment(logits, targets, emb, weight)[0], atol=1e-5)


def test_half_precision_inputs_are_computed_in_float32():
    logits, targets, emb, weight, _ = _batch(7)
    bf = [jnp.asarray(a, jnp.bfloat16) for a in (logits, emb, weight)]
    got = gj.alignment(bf[0], jnp.asarray(targets), bf[1], bf[2])
    assert got.dtype == jnp.float32
    expected, _ = numpy_alignment(*(np.asarray(a, np.float64) for a in (bf[0], targets, bf[1], bf[2])))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_out_of_range_class_id_under_jit_is_nan_not_a_silent_score():
    logits, targets, emb, weight, _ = _batch(8, n=5)
    targets[3] = 99
    scores = jax.jit(gj.alignment)(*(jnp.asarray(a) for a in (logits, targets, emb, weight)))
    assert np.isnan(np.asarray(scores)).tolist() == [False, False, False, True, False]
    state = gj.moments_update(gj.moments_init(), scores)
    with pytest.raises(ValueError, match=r"Expected finite moments in `state`.*class id outside"):
        gj.to_moments(state)


def test_nan_logits_under_jit_propagate_instead_of_becoming_undefined():
    logits, targets, emb, weight, _ = _batch(9, n=3)
    logits[1, 0] = np.nan
    scores, mask = jax.jit(gj.alignment_with_mask)(*(jnp.asarray(a) for a in (logits, targets, emb, weight)))
    assert np.isnan(np.asarray(scores)[1]) and bool(mask[1])


def test_shape_errors_at_trace_time():
    logits, targets, emb, weight, _ = _batch(10)
    kernel = jnp.asarray(weight.T)  # Flax layout (D, C)
    with pytest.raises(
        ValueError, match=r"Expected `weight` to have shape \(C, D\) = \(6, 9\).*Flax Dense kernel"
    ):
        jax.jit(gj.alignment)(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(emb), kernel)
    with pytest.raises(ValueError, match=r"Expected `embeddings` to have shape \(N, D\)"):
        gj.alignment(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(emb[:-1]), jnp.asarray(weight))
    with pytest.raises(ValueError, match=r"Expected `targets` to be class ids of shape \(N,\)"):
        gj.alignment(jnp.asarray(logits), jnp.asarray(targets[:-1]), jnp.asarray(emb), jnp.asarray(weight))
    with pytest.raises(ValueError, match=r"Expected `bias` to have shape \(C,\)"):
        gj.alignment(*(jnp.asarray(a) for a in (logits, targets, emb, weight)), jnp.zeros(3))


def test_type_errors():
    logits, targets, emb, weight, _ = _batch(11)
    args = [jnp.asarray(a) for a in (logits, targets, emb, weight)]
    with pytest.raises(
        TypeError, match=r"Expected `targets` of shape \(N,\) to hold integer class ids.*float32"
    ):
        jax.jit(gj.alignment)(args[0], args[1].astype(jnp.float32), args[2], args[3])
    with pytest.raises(
        TypeError, match=r"Expected `targets` of shape \(N,\) to hold integer class ids.*bool"
    ):
        gj.alignment(args[0], args[1] > 2, args[2], args[3])
    with pytest.raises(TypeError, match=r"Expected `logits` to be a real-valued array"):
        gj.alignment(args[0] > 0, args[1], args[2], args[3])
    with pytest.raises(TypeError, match=r"Expected `weight` to be a real-valued array"):
        gj.alignment(args[0], args[1], args[2], "W")


def test_value_errors_when_called_eagerly():
    logits, targets, emb, weight, _ = _batch(12)
    args = [jnp.asarray(a) for a in (logits, targets, emb, weight)]
    with pytest.raises(ValueError, match=r"Expected `targets` class ids in \[0, 5\].*got values in \[-1,"):
        gj.alignment(args[0], args[1].at[0].set(-1), args[2], args[3])
    with pytest.raises(ValueError, match=r"Expected finite `embeddings`; got 1 NaN/Inf"):
        gj.alignment(args[0], args[1], args[2].at[1, 1].set(jnp.inf), args[3])
    soft = jnp.asarray(_batch(12, soft=True)[1])
    with pytest.raises(ValueError, match=r"Expected soft `targets` rows to sum to 1"):
        gj.alignment(args[0], soft * 2, args[2], args[3])
