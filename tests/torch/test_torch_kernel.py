"""gwa.torch kernel against brute-force per-sample autograd gradients and the numpy core."""

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gwa
import torch
from gwa._kernel import alignment_with_mask as numpy_alignment_with_mask
from gwa.torch import _kernel, alignment, alignment_with_mask


def brute_force(logits_fn_inputs, targets, weight, bias, with_bias):
    """cos(-grad, [W b]) from per-sample autograd gradients of the cross-entropy (float64)."""
    x = logits_fn_inputs

    def loss(w, b, xi, ti):
        z = xi @ w.T + b
        return F.cross_entropy(z[None], ti[None])

    gw, gb = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(
        weight, bias, x, targets
    )
    g = gw.flatten(1)
    p = weight.flatten()
    if with_bias:
        g = torch.cat([g, gb], dim=1)
        p = torch.cat([p, bias])
    return -(g @ p) / (g.norm(dim=1) * p.norm())


def make_problem(n, c, d, target_kind, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(c, d, generator=g, dtype=dtype) / d**0.5
    b = torch.randn(c, generator=g, dtype=dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    if target_kind == "hard":
        targets = labels
    elif target_kind == "smooth":
        targets = F.one_hot(labels, c).to(dtype) * 0.9 + 0.1 / c
    else:  # mixup: a convex mixture of two one-hot labels
        lam = torch.rand(n, 1, generator=g, dtype=dtype)
        other = torch.randint(0, c, (n,), generator=g)
        targets = lam * F.one_hot(labels, c).to(dtype) + (1 - lam) * F.one_hot(other, c).to(dtype)
    return x, w, b, targets


SHAPES = [(6, 2, 1), (5, 3, 7), (4, 10, 64), (3, 1000, 16), (3, 50, 2048), (2, 1000, 2048)]


@pytest.mark.parametrize(("n", "c", "d"), SHAPES)
@pytest.mark.parametrize("target_kind", ["hard", "smooth", "mixup"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_per_sample_autograd(n, c, d, target_kind, with_bias):
    x, w, b, targets = make_problem(n, c, d, target_kind, seed=n * c + d)
    expected = brute_force(x, targets, w, b, with_bias)
    logits = x @ w.T + b
    got64 = alignment(logits, targets, x, w, b if with_bias else None)
    assert got64.dtype == torch.float64
    assert torch.max(torch.abs(got64 - expected)) <= 1e-10
    got32 = alignment(
        logits.float(),
        targets.float() if targets.is_floating_point() else targets,
        x.float(),
        w.float(),
        b.float() if with_bias else None,
    )
    assert got32.dtype == torch.float32
    assert torch.max(torch.abs(got32.double() - expected)) <= 1e-5


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("target_kind", ["hard", "mixup"])
def test_matches_numpy_core(with_bias, target_kind):
    x, w, b, targets = make_problem(17, 5, 9, target_kind, seed=3)
    bias = b if with_bias else None
    logits = x @ w.T + b
    got, got_mask = alignment_with_mask(logits, targets, x, w, bias)
    ref, ref_mask = numpy_alignment_with_mask(
        logits.numpy(), targets.numpy(), x.numpy(), w.numpy(), None if bias is None else bias.numpy()
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(got_mask.numpy(), ref_mask)


def test_core_dispatches_torch_tensors():
    x, w, _, y = make_problem(4, 3, 5, "hard", seed=1)
    out = gwa.alignment(x @ w.T, y, x, w)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, alignment(x @ w.T, y, x, w))


def test_confident_samples_do_not_underflow_in_float32():
    # p_y = 1 - 1e-30: d ~ 1e-30 per entry, whose square underflows float32 without the row rescale.
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    w = torch.tensor([[3.0, 0.0], [0.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    logits = torch.tensor([[70.0, 0.0, 1.0]], dtype=torch.float64)
    expected_d = torch.softmax(logits, 1)
    expected_d[0, 0] = -expected_d[0, 1:].sum()
    g = torch.outer(expected_d[0], x[0])
    expected = float(-(g * w).sum() / (g.norm() * w.norm()))
    got = alignment(logits.float(), torch.tensor([0]), x.float(), w.float())
    assert got.dtype == torch.float32
    assert abs(float(got[0]) - expected) < 1e-6
    assert abs(expected) > 0.1  # a real, non-degenerate cosine


def test_undefined_cosines_get_the_undefined_score_and_mask():
    w = torch.eye(3)
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    logits = torch.zeros(2, 3)
    soft = torch.full((2, 3), 1 / 3)  # p == y: zero gradient
    scores, defined = alignment_with_mask(logits, soft, x, w)
    assert scores.tolist() == [gwa.UNDEFINED_SCORE, gwa.UNDEFINED_SCORE]
    assert defined.tolist() == [False, False]


def test_half_precision_inputs_are_upcast():
    x, w, _, y = make_problem(8, 4, 6, "hard", seed=2)
    ref = alignment(x @ w.T, y, x, w)
    got = alignment((x @ w.T).bfloat16(), y, x.bfloat16(), w.bfloat16())
    assert got.dtype == torch.float32
    # Inputs were rounded to bf16 (8 bits of mantissa); only that rounding separates the two.
    assert torch.max(torch.abs(got.double() - ref)) < 0.05


def test_dtype_option_and_device_kept():
    x, w, _, y = make_problem(3, 4, 2, "hard", seed=4, dtype=torch.float32)
    out = alignment(x @ w.T, y, x, w, dtype=torch.float64)
    assert out.dtype == torch.float64 and out.device == x.device
    with pytest.raises(ValueError, match="Expected `dtype` to be torch.float32 or torch.float64"):
        alignment(x @ w.T, y, x, w, dtype=torch.float16)


def test_split_halves_equal_the_public_function():
    x, w, b, y = make_problem(7, 5, 3, "smooth", seed=5)
    terms = _kernel.head_terms(x, w, b, dtype=torch.float64)
    scores, _ = _kernel.scores_from_head_terms(x @ w.T + b, y, terms, soft=True)
    torch.testing.assert_close(scores, alignment(x @ w.T + b, y, x, w, b), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": np.zeros((2, 3))}, TypeError, "Expected `logits` to be a torch.Tensor; got ndarray"),
        (
            {"embeddings": torch.zeros(2, 4, dtype=torch.int64)},
            TypeError,
            "Expected `embeddings` to be a floating",
        ),
        ({"weight": torch.zeros(4, 3)}, ValueError, r"not its transpose"),
        ({"targets": torch.tensor([0, 3])}, ValueError, r"class ids in \[0, 2\].*got values in \[0, 3\]"),
        ({"targets": torch.tensor([0.0, 1.0])}, TypeError, "integer class ids"),
        ({"targets": torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])}, ValueError, "rows to sum to 1"),
        (
            {"targets": torch.tensor([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]])},
            ValueError,
            r"probabilities \(>= 0\)",
        ),
        (
            {"logits": torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])},
            ValueError,
            r"finite `logits`; got 1 NaN/Inf",
        ),
        ({"bias": torch.zeros(2)}, ValueError, r"`bias` to have shape \(C,\) = \(3,\)"),
        (
            {
                "logits": torch.zeros(0, 3),
                "targets": torch.zeros(0, dtype=torch.int64),
                "embeddings": torch.zeros(0, 4),
            },
            ValueError,
            "non-empty batch",
        ),
        ({"embeddings": torch.zeros(2, 4, device="meta")}, ValueError, "Expected all inputs on one device"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = {
        "logits": torch.zeros(2, 3),
        "targets": torch.tensor([0, 1]),
        "embeddings": torch.ones(2, 4),
        "weight": torch.ones(3, 4),
        "bias": None,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        alignment(**args)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    c=st.integers(2, 6),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-20, 1e-3, 1.0, 1e3, 1e20]),
    soft=st.booleans(),
    with_bias=st.booleans(),
)
def test_scores_are_cosines_in_bounds(n, c, d, seed, scale, soft, with_bias):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * scale
    w = torch.randn(c, d, generator=g)
    b = torch.randn(c, generator=g) if with_bias else None
    logits = torch.randn(n, c, generator=g) * 30
    targets = (
        torch.softmax(torch.randn(n, c, generator=g), 1) if soft else torch.randint(0, c, (n,), generator=g)
    )
    scores, defined = alignment_with_mask(logits, targets, x, w, b)
    assert torch.isfinite(scores).all()
    assert (scores.abs() <= 1.0).all()
    assert (scores[~defined] == gwa.UNDEFINED_SCORE).all()


def test_finite_check_survives_an_overflowing_sum():
    # The fast check sums the tensor; a sum that overflows must not be mistaken for NaN/Inf input.
    big = torch.full((2, 3), 3e38)
    scores = alignment(torch.zeros(2, 3), torch.tensor([0, 1]), big[:, :2], torch.ones(3, 2))
    assert torch.isfinite(scores).all()
    with pytest.raises(ValueError, match=r"finite `embeddings`; got 1 NaN/Inf"):
        alignment(
            torch.zeros(2, 3),
            torch.tensor([0, 1]),
            torch.tensor([[1.0, float("inf")], [0.0, 1.0]]),
            torch.ones(3, 2),
        )


@pytest.mark.parametrize(("n", "c", "d"), SHAPES)
@pytest.mark.parametrize("target_kind", ["hard", "smooth", "mixup"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_head_output_gives_the_same_scores(n, c, d, target_kind, with_bias):
    """W x read from the head's output instead of recomputed: the per-sample autograd values and the numpy core."""
    x, w, b, targets = make_problem(n, c, d, target_kind, seed=n * c + d)
    logits = x @ w.T + b
    # The head's output as given: W x + b with the bias in the cosine, W x (logits - b) without.
    out = logits if with_bias else logits - b
    bias = b if with_bias else None
    expected = brute_force(x, targets, w, b, with_bias)
    got64, mask = alignment_with_mask(logits, targets, x, w, bias, head_output=out)
    assert got64.dtype == torch.float64
    assert torch.max(torch.abs(got64 - expected)) <= 1e-10
    ref, ref_mask = numpy_alignment_with_mask(
        logits.numpy(), targets.numpy(), x.numpy(), w.numpy(), None if bias is None else bias.numpy()
    )
    np.testing.assert_allclose(got64.numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    f = {k: v.float() for k, v in {"x": x, "w": w, "b": b, "logits": logits, "out": out}.items()}
    got32 = alignment(
        f["logits"],
        targets.float() if targets.is_floating_point() else targets,
        f["x"],
        f["w"],
        f["b"] if with_bias else None,
        head_output=f["out"],
    )
    assert got32.dtype == torch.float32
    assert torch.max(torch.abs(got32.double() - expected)) <= 1e-5


def test_head_output_with_temperature_and_zero_embeddings():
    """logits = out / T are scored against the head's own output; a zero embedding stays undefined."""
    x, w, _, y = make_problem(6, 4, 5, "hard", seed=2)
    x[2] = 0.0
    out = x @ w.T
    got, mask = alignment_with_mask(out / 3.0, y, x, w, head_output=out)
    ref, ref_mask = numpy_alignment_with_mask((out / 3.0).numpy(), y.numpy(), x.numpy(), w.numpy())
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    assert not bool(mask[2])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda o: o.numpy(), TypeError, r"Expected `head_output` to be a torch.Tensor; got ndarray"),
        (lambda o: o.long(), TypeError, r"Expected `head_output` to be a floating-point tensor; got"),
        (
            lambda o: o[:, :3],
            ValueError,
            r"`head_output` of shape \(N, C\) = \(5, 4\) like `logits`; got shape=\(5, 3\)",
        ),
        (
            lambda o: o.index_fill(0, torch.tensor([1]), float("nan")),
            ValueError,
            r"finite `head_output`; got 4",
        ),
        (
            lambda o: o + 1.0,
            ValueError,
            r"`head_output` to be embeddings @ weight.T \(without the head's bias: pass",
        ),
    ],
    ids=["not a tensor", "integer", "shape", "nan", "not the product"],
)
def test_head_output_errors(make, error, match):
    x, w, b, y = make_problem(5, 4, 3, "hard", seed=4)
    with pytest.raises(error, match=match):
        alignment(x @ w.T, y, x, w, head_output=make(x @ w.T))
    with pytest.raises(ValueError, match=r"embeddings @ weight.T \+ bias from the same forward pass"):
        alignment(x @ w.T + b, y, x, w, b, head_output=x @ w.T)  # the bias left out of the given output
