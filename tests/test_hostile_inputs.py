"""The hostile-input suite, API part: property-based tests (hypothesis) of ``gwa.alignment``'s numpy core.

Valid inputs give the brute-force cosine of the per-sample gradient and the head; anything else gives a
ValueError or TypeError, never another exception and never a NaN or out-of-range score.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gwa

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def valid_batches(draw):
    n, c, d = draw(st.integers(1, 6)), draw(st.integers(2, 5)), draw(st.integers(1, 5))
    weight = draw(hnp.arrays(np.float64, (c, d), elements=finite))
    embeddings = draw(hnp.arrays(np.float64, (n, d), elements=finite))
    logits = embeddings @ weight.T + draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-1, 1)))
    if draw(st.booleans()):
        targets = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    else:
        raw = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0.01, 1)))
        targets = raw / raw.sum(axis=1, keepdims=True)
    return logits, targets, embeddings, weight


def brute_force(logits, targets, embeddings, weight):
    """cos(-d x^T, W) from the full (C, D) gradient of each sample; 0 where undefined."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if targets.ndim == 1:  # d_y = p_y - 1 = -(the other classes' mass): exact when p_y rounds to 1
        onehot = np.eye(logits.shape[1], dtype=bool)[targets]
        d = np.where(onehot, 0.0, p)
        d[onehot] = -d.sum(axis=1)
    else:
        d = p - targets
        # A soft target within rounding of the prediction has no meaningful gradient direction (d ~ 1e-16 is
        # noise); such rows are compared by test_a_soft_target_equal_to_the_prediction_is_undefined instead.
        d[np.abs(d).max(axis=1) < 1e-9] = np.nan

    def unit(a):  # the cosine is scale-free
        return a / np.abs(a).max() if np.abs(a).max() > 0 else a

    weight = unit(weight)  # so that tiny (subnormal) entries do not underflow in the norms
    out = []
    for d_i, x in zip(d, embeddings):
        grad = np.outer(unit(d_i), unit(x))
        norm = np.linalg.norm(grad) * np.linalg.norm(weight)
        out.append(0.0 if norm == 0 else float(-(grad * weight).sum() / norm))  # NaN stays NaN
    return np.array(out)


@pytest.mark.hostile("accepted")
@SETTINGS
@given(valid_batches())
def test_valid_inputs_give_the_brute_force_cosine(batch):
    scores = gwa.alignment(*batch)
    assert scores.shape == (batch[0].shape[0],) and np.all(np.abs(scores) <= 1.0)
    expected = brute_force(*batch)
    comparable = np.isfinite(expected)
    np.testing.assert_allclose(scores[comparable], expected[comparable], atol=1e-6)


@pytest.mark.hostile("accepted")
@pytest.mark.parametrize("logits", [[1.0, 1.0, 1.0], [0.3, -2.0, 5.0]])
def test_a_soft_target_equal_to_the_prediction_is_undefined(logits):
    """Zero gradient: the cosine is undefined (0, counted), not rounding noise blown up to +-1."""
    z = np.array([logits])
    p = np.exp(z - z.max())
    target = p / p.sum()
    target[0, 0], target[0, 1] = np.nextafter(target[0, 0], 1), np.nextafter(target[0, 1], 0)  # 1 ulp off
    scores, defined = gwa._kernel.alignment_with_mask(z, target, np.ones((1, 1)), np.ones((3, 1)))
    assert scores.tolist() == [gwa._kernel.UNDEFINED_SCORE] and defined.tolist() == [False]


@pytest.mark.hostile("accepted")
@SETTINGS
@given(valid_batches(), st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_scores_ignore_the_scale_of_the_head_and_of_each_embedding(batch, head_scale, row_scale):
    logits, targets, embeddings, weight = batch
    x, w = embeddings * row_scale, weight * head_scale
    # The property holds for the values given: a subnormal entry that the scaling rounds to zero (5e-324 * 0.5)
    # changes the input, and a zero embedding has no direction.
    assume(np.array_equal(x != 0, embeddings != 0) and np.array_equal(w != 0, weight != 0))
    base = gwa.alignment(logits, targets, embeddings, weight)
    # The cosine is scale-free in W and in each x (the logits, hence the gradient direction, stay as given).
    np.testing.assert_allclose(gwa.alignment(logits, targets, x, w), base, atol=1e-9)


dtypes = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.int8, np.bool_, np.complex128, object, np.str_]
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def hostile_arrays(draw):
    dtype = draw(dtypes)
    shape = draw(shapes)
    if dtype is object:
        return np.array(
            draw(st.lists(st.one_of(st.none(), st.text(max_size=2), finite), min_size=1, max_size=3)),
            dtype=object,
        )
    if dtype is np.str_:
        return np.array(draw(st.lists(st.text(max_size=3), min_size=1, max_size=4)))
    arr = draw(hnp.arrays(dtype, shape))  # floats include NaN, Inf and extremes
    return arr


@pytest.mark.slow  # hypothesis: 150 hostile batches
@pytest.mark.hostile("refused")
@SETTINGS
@given(st.data())
def test_anything_else_is_a_clear_error_or_a_valid_score(data):
    valid = data.draw(valid_batches())
    args = list(valid)
    # Replace one to four of the arguments with hostile arrays.
    for i in data.draw(st.sets(st.integers(0, 3), min_size=1, max_size=4)):
        args[i] = data.draw(hostile_arrays())
    try:
        scores = gwa.alignment(*args)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("Expected"), str(exc)  # noqa: PT017 - either outcome is allowed, checked here
        return
    assert scores.ndim == 1 and np.all(np.isfinite(scores)) and np.all(np.abs(scores) <= 1.0)
