"""The numpy alignment kernel against brute-force per-sample gradients from autograd, and its edge cases.

The oracle never uses the closed form: it differentiates the cross-entropy with ``torch.func.grad`` per sample
(``vmap``) with respect to the head weight (and bias), then takes the cosine of the negative gradient with the
weight, exactly the paper's definition.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the brute-force reference: per-sample autograd

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gwa
from gwa._kernel import alignment_with_mask, loss_gradient_wrt_logits

torch.set_num_threads(1)

TOL = 1e-10


def autograd_alignment(embeddings, weight, targets, bias=None, offset=None, stable=False):
    """Cosine of ``-grad`` of each sample's cross-entropy with ``W`` (``[W b]`` with bias), via autograd.

    ``targets`` are ``(N, C)`` probabilities. The logits are ``W x + b + offset`` (``offset`` is a constant,
    not a parameter). ``stable`` uses ``log1p(sum_{k!=y} exp(z_k - z_y))`` for one-hot targets: the same loss,
    whose autograd gradient keeps full precision when ``p_y`` rounds to 1.

    Returns:
        ``(N,)`` cosines (NaN where the gradient is exactly zero) and the ``(N, P)`` flat gradients.
    """
    x = torch.as_tensor(embeddings, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.float64)
    off = torch.zeros(y.shape, dtype=torch.float64) if offset is None else torch.as_tensor(offset)
    params = {"W": torch.as_tensor(weight, dtype=torch.float64)}
    if bias is not None:
        params["b"] = torch.as_tensor(bias, dtype=torch.float64)

    def loss(p, xi, yi, oi):
        z = p["W"] @ xi + oi + p.get("b", 0.0)
        if stable:
            others = (1.0 - yi) * torch.exp(z - (yi * z).sum())
            return torch.log1p(others.sum())
        return -(yi * torch.log_softmax(z, dim=0)).sum()

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))(params, x, y, off)
    g = torch.cat([grads[k].reshape(len(x), -1) for k in params], dim=1).numpy()
    w = np.concatenate([params[k].numpy().ravel() for k in params])
    # Normalise rows first so that the tiny gradients of confident samples do not underflow in the norm.
    scale = np.abs(g).max(axis=1, keepdims=True)
    nonzero = scale[:, 0] > 0
    g_unit = np.where(nonzero[:, None], g / np.where(scale > 0, scale, 1.0), 0.0)
    w_unit = w / np.abs(w).max() if np.any(w) else w
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = -(g_unit @ w_unit) / (np.linalg.norm(g_unit, axis=1) * np.linalg.norm(w_unit))
    return np.where(nonzero & np.any(w), cos, np.nan), g


def one_hot(labels, c):
    return np.eye(c)[labels]


def make_batch(rng, n, c, d, target_kind, use_bias):
    x = rng.normal(size=(n, d))
    weight = rng.normal(size=(c, d)) / math.sqrt(d)
    bias = rng.normal(size=c) if use_bias else None
    labels = rng.integers(0, c, size=n)
    if target_kind == "hard":
        targets, probs = labels, one_hot(labels, c)
    elif target_kind == "smooth":
        eps = 0.1
        probs = (1 - eps) * one_hot(labels, c) + eps / c
        targets = probs
    else:  # mixup of two samples' labels with a Beta-drawn weight per sample
        lam = rng.beta(0.4, 0.4, size=(n, 1))
        probs = lam * one_hot(labels, c) + (1 - lam) * one_hot(rng.permutation(labels), c)
        targets = probs
    return x, weight, bias, targets, probs


SHAPES = [(8, 2, 1), (8, 2, 2048), (6, 10, 64), (5, 1000, 16), (2, 1000, 2048), (16, 7, 300)]


@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("target_kind", ["hard", "smooth", "mixup"])
@pytest.mark.parametrize(("n", "c", "d"), SHAPES)
def test_matches_autograd_per_sample_gradients(rng, n, c, d, target_kind, use_bias):
    x, weight, bias, targets, probs = make_batch(rng, n, c, d, target_kind, use_bias)
    logits = x @ weight.T + (0.0 if bias is None else bias)
    scores, defined = alignment_with_mask(logits, targets, x, weight, bias)
    expected, _ = autograd_alignment(x, weight, probs, bias)
    assert defined.all()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL)
    np.testing.assert_array_equal(gwa.alignment(logits, targets, x, weight, bias), scores)


def test_scores_are_nontrivial_across_the_batch(rng):
    # Guards against an oracle/kernel pair that agree because both are degenerate (e.g. constant).
    x, weight, _, labels, _ = make_batch(rng, 64, 10, 32, "hard", False)
    scores = gwa.alignment(x @ weight.T, labels, x, weight)
    assert scores.std() > 0.05 and scores.min() < 0 < scores.max()


def test_hand_computed_values():
    # C=2, D=1, W=[[3], [-1]], x=2, y=0: d = t (-1, 1), cos = sign(x) (w0 - w1) / (sqrt2 ||W||) = 2 / sqrt(5).
    weight = np.array([[3.0], [-1.0]])
    for x, sign in ((2.0, 1.0), (-0.5, -1.0)):
        emb = np.array([[x]])
        score = gwa.alignment(emb @ weight.T, np.array([0]), emb, weight)
        assert score[0] == pytest.approx(sign * 2 / math.sqrt(5), abs=1e-15)
    # W = I (C=D=2), x = e_0, label 0: d = (-t, t), W^T d = d, cos = t / (sqrt2 t * sqrt2) = 1/2.
    emb = np.array([[1.0, 0.0]])
    assert gwa.alignment(emb, np.array([0]), emb, np.eye(2))[0] == pytest.approx(0.5, abs=1e-15)
    # Same sample with the wrong label: the gradient points away from W, cos = -1/2.
    assert gwa.alignment(emb, np.array([1]), emb, np.eye(2))[0] == pytest.approx(-0.5, abs=1e-15)


def test_loss_gradient_wrt_logits_is_softmax_minus_targets(rng):
    logits = rng.normal(size=(5, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        loss_gradient_wrt_logits(logits, labels, False), probs - one_hot(labels, 4), atol=1e-15
    )
    soft = rng.dirichlet(np.ones(4), size=5)
    np.testing.assert_allclose(loss_gradient_wrt_logits(logits, soft, True), probs - soft, atol=1e-15)


@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
def test_zero_embedding_rows(rng, use_bias):
    x, weight, bias, labels, probs = make_batch(rng, 6, 5, 8, "hard", use_bias)
    x[[1, 4]] = 0.0
    logits = x @ weight.T + (0.0 if bias is None else bias)
    scores, defined = alignment_with_mask(logits, labels, x, weight, bias)
    expected, grads = autograd_alignment(x, weight, probs, bias)
    if use_bias:
        # The gradient is [0, d]: defined, and it must match autograd.
        assert defined.all()
        np.testing.assert_allclose(scores, expected, atol=TOL)
    else:
        assert not np.any(grads[[1, 4]])
        np.testing.assert_array_equal(defined, [True, False, True, True, False, True])
        np.testing.assert_array_equal(scores[[1, 4]], gwa.UNDEFINED_SCORE)
        np.testing.assert_allclose(scores[defined], expected[defined], atol=TOL)


@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
def test_perfectly_fit_samples(rng, use_bias):
    # Margins 40 and 300: p_y rounds to 1 but the gradient is a tiny nonzero vector; 1000: it is exactly zero.
    n, c, d = 6, 5, 4
    x, weight, bias, labels, probs = make_batch(rng, n, c, d, "hard", use_bias)
    margins = np.array([0.0, 40.0, 300.0, 1000.0, 40.0, 1000.0])
    offset = margins[:, None] * one_hot(labels, c)
    logits = x @ weight.T + offset + (0.0 if bias is None else bias)
    scores, defined = alignment_with_mask(logits, labels, x, weight, bias)
    expected, grads = autograd_alignment(x, weight, probs, bias, offset=offset, stable=True)
    zero_grad = ~np.any(grads, axis=1)
    np.testing.assert_array_equal(zero_grad, margins == 1000.0)
    np.testing.assert_array_equal(defined, ~zero_grad)
    np.testing.assert_array_equal(scores[zero_grad], gwa.UNDEFINED_SCORE)
    np.testing.assert_allclose(scores[defined], expected[defined], rtol=0, atol=TOL)
    # The confident samples' cosine is not a degenerate value: it differs between samples.
    assert abs(scores[1] - scores[4]) > 1e-3


def test_soft_targets_equal_to_the_prediction_give_an_undefined_score():
    logits = np.zeros((2, 3))
    targets = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    x = np.array([[1.0, 2.0], [1.0, 2.0]])
    weight = np.arange(6.0).reshape(3, 2)
    scores, defined = alignment_with_mask(logits, targets, x, weight)
    np.testing.assert_array_equal(defined, [False, True])
    assert scores[0] == gwa.UNDEFINED_SCORE


def test_zero_weight_matrix(rng):
    x, _, _, labels, probs = make_batch(rng, 5, 4, 3, "hard", False)
    weight = np.zeros((4, 3))
    logits = rng.normal(size=(5, 4))
    scores, defined = alignment_with_mask(logits, labels, x, weight)
    assert not defined.any()
    np.testing.assert_array_equal(scores, gwa.UNDEFINED_SCORE)
    # With a nonzero bias the head [W b] is nonzero: defined, and equal to autograd's cosine.
    bias = rng.normal(size=4)
    scores, defined = alignment_with_mask(bias + 0 * logits, labels, x, weight, bias)
    expected, _ = autograd_alignment(x, weight, probs, bias)
    assert defined.all()
    np.testing.assert_allclose(scores, expected, atol=TOL)


@pytest.mark.parametrize("use_bias", [False, True], ids=["no_bias", "bias"])
def test_bounds_and_sign_flip_when_the_head_is_negated(rng, use_bias):
    x, weight, bias, labels, _ = make_batch(rng, 50, 6, 9, "hard", use_bias)
    logits = rng.normal(size=(50, 6)) * 5  # any logits: the score only needs them for d = p - y
    scores = gwa.alignment(logits, labels, x, weight, bias)
    assert np.all((scores >= -1) & (scores <= 1))
    flipped = gwa.alignment(logits, labels, x, -weight, None if bias is None else -bias)
    np.testing.assert_array_equal(flipped, -scores)


def test_invariant_to_scaling_the_embeddings(rng):
    x, weight, _, labels, _ = make_batch(rng, 20, 6, 9, "hard", False)
    logits = x @ weight.T
    scores = gwa.alignment(logits, labels, x, weight)
    for factor in (1e-200, 1e-3, 3.7, 1e250):
        np.testing.assert_allclose(
            gwa.alignment(logits, labels, factor * x, weight), scores, rtol=0, atol=1e-14
        )


def test_extreme_but_finite_heads_and_embeddings(rng):
    # The cosine only depends on the direction of [W b] and of the gradient: huge or tiny heads must give the
    # same score, not overflow to 0/NaN (||W||^2 = inf) or lose digits to subnormals.
    x, weight, bias, labels, _ = make_batch(rng, 10, 4, 3, "hard", True)
    logits = x @ weight.T + bias
    for b in (None, bias):
        ref = gwa.alignment(logits, labels, x, weight, b)
        for k in (-1000, -500, 500, 1000):
            scale = 2.0**k  # a power of two scales exactly, so the scores must be identical
            with np.errstate(over="raise", divide="raise", invalid="raise"):
                got = gwa.alignment(logits, labels, x, weight * scale, None if b is None else b * scale)
            np.testing.assert_array_equal(got, ref)
    # Tiny embeddings with a bias: the gradient is ~[0, d]; 1 / s^2 must not overflow.
    tiny = np.full((1, 3), 1e-200)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        score = gwa.alignment(bias[None, :], labels[:1], tiny, weight, bias)
    expected, _ = autograd_alignment(np.zeros((1, 3)), weight, one_hot(labels[:1], 4), bias)
    np.testing.assert_allclose(score, expected, atol=TOL)


def test_accepts_lists_integral_float_labels_and_float32(rng):
    x, weight, _, labels, _ = make_batch(rng, 4, 3, 2, "hard", False)
    logits = x @ weight.T
    ref = gwa.alignment(logits, labels, x, weight)
    assert ref.dtype == np.float64
    np.testing.assert_array_equal(
        gwa.alignment(logits.tolist(), labels.tolist(), x.tolist(), weight.tolist()), ref
    )
    np.testing.assert_array_equal(gwa.alignment(logits, labels.astype(np.float64), x, weight), ref)
    got32 = gwa.alignment(logits.astype(np.float32), labels, x.astype(np.float32), weight.astype(np.float32))
    np.testing.assert_allclose(got32, ref, atol=1e-6)


def test_dispatches_on_the_array_type(rng):
    x, weight, _, labels, _ = make_batch(rng, 4, 3, 2, "hard", False)
    logits = x @ weight.T
    ref = gwa.alignment(logits, labels, x, weight)
    t = [torch.as_tensor(a) for a in (logits, labels, x, weight)]
    out = gwa.alignment(*t)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    jnp = pytest.importorskip("jax.numpy")
    out = gwa.alignment(*(jnp.asarray(a) for a in (logits, labels, x, weight)))
    assert type(out).__module__.startswith(("jax", "jaxlib"))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-6)  # jax computes in float32 unless x64 is on


# ---- property tests -------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 5))
    c = draw(st.integers(2, 5))
    d = draw(st.integers(1, 5))
    logits = draw(hnp.arrays(np.float64, (n, c), elements=finite))
    emb = draw(hnp.arrays(np.float64, (n, d), elements=finite))
    weight = draw(hnp.arrays(np.float64, (c, d), elements=finite))
    bias = draw(st.none() | hnp.arrays(np.float64, (c,), elements=finite))
    if draw(st.booleans()):
        targets = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    else:
        raw = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0, 1e3)))
        raw[:, 0] += 1e-3  # keep every row's sum positive
        targets = raw / raw.sum(axis=1, keepdims=True)
    return logits, targets, emb, weight, bias


@settings(max_examples=150, deadline=None)
@given(batches())
def test_property_scores_are_finite_and_bounded(batch):
    with np.errstate(over="ignore", under="ignore"):  # exp of hugely negative shifted logits underflows to 0
        scores, defined = alignment_with_mask(*batch)
    assert scores.shape == (batch[0].shape[0],)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= -1.0) & (scores <= 1.0))
    assert np.all(scores[~defined] == gwa.UNDEFINED_SCORE)


@settings(max_examples=80, deadline=None)
@given(batches(), st.integers(-600, 600))
def test_property_invariant_to_scaling_the_head(batch, k):
    logits, targets, emb, weight, bias = batch
    factor = 2.0**k
    with np.errstate(all="ignore"):
        ref, ref_defined = alignment_with_mask(logits, targets, emb, weight, bias)
        head = weight if bias is None else np.concatenate([weight.ravel(), bias])
        scaled = head * factor
        # Scaling by 2^k is exact unless it leaves the finite normal range; only then may the score change.
        if not np.array_equal(scaled / factor, head) or not np.all(np.isfinite(scaled)):
            return
        got, got_defined = alignment_with_mask(
            logits, targets, emb, weight * factor, None if bias is None else bias * factor
        )
    np.testing.assert_array_equal(got_defined, ref_defined)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("adapter", ["numpy", "torch64", "torch32", "jax32"])
def test_a_soft_target_equal_to_the_prediction_is_undefined_in_every_adapter(rng, adapter):
    # A zero gradient has no direction: every adapter gives UNDEFINED_SCORE, not rounding noise blown up to +-1.
    x, W = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    z = x @ W.T
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    args = (z, p, x, W)
    # The target is the framework's own prediction, in its own precision (e.g. distillation from itself).
    if adapter.startswith("torch"):
        z_t, x_t, W_t = (
            torch.tensor(a, dtype=torch.float64 if adapter == "torch64" else torch.float32) for a in (z, x, W)
        )
        args = (z_t, torch.softmax(z_t, dim=1), x_t, W_t)
    elif adapter == "jax32":
        jax = pytest.importorskip("jax")
        z_j, x_j, W_j = (jax.numpy.asarray(a, jax.numpy.float32) for a in (z, x, W))
        args = (z_j, jax.nn.softmax(z_j, axis=1), x_j, W_j)
    np.testing.assert_array_equal(np.asarray(gwa.alignment(*args)), np.full(6, gwa.UNDEFINED_SCORE))
