"""Every raise of the kernel's input checks: the error type and a message that names the argument."""

import re

import numpy as np
import pytest

import gwa
from gwa._kernel import alignment_with_mask
from gwa._validation import check_choice, check_positive, describe

N, C, D = 4, 3, 5


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(N, D))
    weight = rng.normal(size=(C, D))
    return {
        "logits": x @ weight.T,
        "targets": np.array([0, 2, 1, 0]),
        "embeddings": x,
        "weight": weight,
        "bias": None,
    }


def call(batch, **changes):
    return gwa.alignment(**{**batch, **changes})


def test_valid_batch_passes(batch):
    assert call(batch).shape == (N,)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("logits", np.zeros(N), r"`logits` to have shape \(N, C\); got shape=\(4,\)"),
        ("logits", np.zeros((N, 1)), r"at least 2 classes \(N, C>=2\); got shape=\(4, 1\)"),
        (
            "embeddings",
            np.zeros((N + 1, D)),
            (
                r"`embeddings` to have shape \(N, D\) with N == logits.shape\[0\] == 4; "
                r"got embeddings.shape=\(5, 5\)"
            ),
        ),
        ("embeddings", np.zeros(N), r"`embeddings` to have shape \(N, D\).*got embeddings.shape=\(4,\)"),
        (
            "weight",
            np.zeros((C, D + 1)),
            (
                r"`weight` to have shape \(C, D\) = \(3, 5\) from logits and embeddings; "
                r"got weight.shape=\(3, 6\)\.$"
            ),
        ),
        ("bias", np.zeros(C + 1), r"`bias` to have shape \(C,\) = \(3,\); got bias.shape=\(4,\)"),
        ("bias", np.zeros((1, C)), r"`bias` to have shape \(C,\) = \(3,\); got bias.shape=\(1, 3\)"),
        (
            "targets",
            np.zeros(N + 1, dtype=int),
            (
                r"`targets` to be class ids of shape \(N,\) = \(4,\) or "
                r"probabilities of shape \(N, C\) = \(4, 3\); got targets.shape=\(5,\)"
            ),
        ),
        ("targets", np.zeros((N, C + 1)), r"got targets.shape=\(4, 4\)"),
        ("targets", np.zeros((N, C, 1)), r"got targets.shape=\(4, 3, 1\)"),
    ],
)
def test_shape_errors(batch, key, value, match):
    with pytest.raises(ValueError, match=match):
        call(batch, **{key: value})


def test_mismatched_batch_sizes_between_logits_and_targets(batch):
    with pytest.raises(ValueError, match=r"targets.shape=\(3,\)"):
        call(batch, targets=np.array([0, 1, 2]))


def test_transposed_weight_gets_a_hint(rng):
    x = rng.normal(size=(2, 4))
    weight = rng.normal(size=(3, 4))
    with pytest.raises(
        ValueError,
        match=r"got weight.shape=\(4, 3\) \(pass the head weight as \(C, D\), torch's "
        r"layout, not its transpose\)",
    ):
        gwa.alignment(x @ weight.T, np.array([0, 1]), x, weight.T)


def test_empty_batch(batch):
    with pytest.raises(ValueError, match=r"non-empty batch; got `logits` with N=0 rows"):
        gwa.alignment(np.zeros((0, C)), np.zeros(0, dtype=int), np.zeros((0, D)), batch["weight"])


@pytest.mark.parametrize(
    ("targets", "lo", "hi"), [([0, 3, 1, 0], 0, 3), ([-1, 0, 1, 2], -1, 2), ([0, 0, 0, 7], 0, 7)]
)
def test_class_ids_out_of_range(batch, targets, lo, hi):
    with pytest.raises(
        ValueError, match=rf"class ids in \[0, 2\] \(C=3 from logits\); got values in \[{lo}, {hi}\]"
    ):
        call(batch, targets=np.array(targets))


@pytest.mark.parametrize(
    "targets",
    [
        np.array([0.0, 1.5, 1.0, 0.0]),
        np.array([0.0, np.nan, 1.0, 0.0]),
        np.array([0.0, np.inf, 1.0, 0.0]),
        np.array([True, False, True, False]),
        np.array([0, 1, 1, 0], dtype=np.complex128),
        np.array(["0", "1", "1", "0"]),
        np.array([0, 1, None, 0], dtype=object),
    ],
    ids=["fractional", "nan", "inf", "bool", "complex", "str", "object"],
)
def test_non_integer_class_ids(batch, targets):
    with pytest.raises(
        TypeError,
        match=r"`targets` of shape \(N,\) to hold integer class ids; got shape=\(4,\), "
        rf"dtype={targets.dtype}",
    ):
        call(batch, targets=targets)


def test_integral_float_class_ids_are_accepted(batch):
    np.testing.assert_array_equal(call(batch, targets=batch["targets"].astype(np.float32)), call(batch))


def soft(rows):
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    ("targets", "error", "match"),
    [
        (
            soft([[0.5, 0.5, 0.0]] * 3 + [[0.5, 0.4, 0.0]]),
            ValueError,
            r"soft `targets` rows to sum to 1 \(probabilities, e.g. label smoothing or mixup\); got a row summing to 0.9",
        ),
        (soft([[1.0, 1.0, 0.0]] * 4), ValueError, r"got a row summing to 2"),
        (
            soft([[1.5, -0.5, 0.0]] * 4),
            ValueError,
            r"soft `targets` to be probabilities \(>= 0\); got minimum -0.5",
        ),
        (soft([[np.nan, 1.0, 0.0]] * 4), ValueError, r"finite soft `targets`; got NaN/Inf in shape=\(4, 3\)"),
        (
            np.array([["a", "b", "c"]] * 4),
            TypeError,
            r"`targets` to be a real-valued array; got shape=\(4, 3\), dtype=<U1",
        ),
    ],
)
def test_bad_soft_targets(batch, targets, error, match):
    with pytest.raises(error, match=match):
        call(batch, targets=targets)


def test_soft_targets_within_tolerance_are_accepted(batch):
    targets = soft([[0.2, 0.3, 0.5 + 5e-5]] * 4)
    assert np.all(np.isfinite(call(batch, targets=targets)))


@pytest.mark.parametrize("key", ["logits", "embeddings", "weight", "bias"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(batch, key, bad):
    value = np.ones(C) if key == "bias" else batch[key].copy()
    value.flat[1] = bad
    value.flat[-1] = bad
    expected = f"Expected finite `{key}`; got 2 NaN/Inf value(s) in shape={value.shape}, dtype=float64."
    with pytest.raises(ValueError, match=re.escape(expected)):
        call(batch, **{key: value})


@pytest.mark.parametrize("key", ["logits", "embeddings", "weight", "bias"])
@pytest.mark.parametrize(
    "value",
    [
        np.array([["a"] * 5] * 4),
        np.full((4, 5), None, dtype=object),
        np.ones((4, 5), dtype=np.complex128),
    ],
    ids=["str", "object", "complex"],
)
def test_non_numeric_arrays(batch, key, value):
    with pytest.raises(
        TypeError, match=rf"`{key}` to be a real-valued array; got shape=\(4, 5\), dtype={value.dtype}"
    ):
        call(batch, **{key: value})


def test_alignment_with_mask_validates_too(batch):
    with pytest.raises(ValueError, match="non-empty batch"):
        alignment_with_mask(np.zeros((0, C)), np.zeros(0, dtype=int), np.zeros((0, D)), batch["weight"])


def test_describe():
    assert describe(np.zeros((2, 3), dtype=np.float32)) == "shape=(2, 3), dtype=float32"
    assert describe([1, 2]) == "type list"


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "1", None, False])
def test_check_positive_rejects(value):
    with pytest.raises(ValueError, match=r"`beta` to be a positive finite number; got "):
        check_positive("beta", value)


def test_check_positive_and_choice_accept():
    assert check_positive("beta", np.float32(2.5)) == 2.5 and isinstance(check_positive("beta", 3), float)
    assert check_choice("rule", "paper", ("paper", "max")) == "paper"
    with pytest.raises(ValueError, match=r"`rule` to be one of \['max', 'paper'\]; got 'best'"):
        check_choice("rule", "best", ("paper", "max"))
