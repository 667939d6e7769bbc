"""gwa against the paper's code (hlzl/gwa), formula written out here: where they agree, where and why they part.

docs/paper-differences.md has the measurements; experiments/paper_differences.py reproduces them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import gwa

C, D = 10, 32


def official_head_alignment(z, y, x, w):
    """``head_alignment`` (src/training/alignment.py) / ``compute_alignment`` (gwa_torch.py) of hlzl/gwa.

    ``d = softmax(z) - onehot(y)`` by direct subtraction in the inputs' dtype, ``v = d W`` (the JAX code's
    ``d @ kernel.T`` with ``kernel = W.T``), ``gamma = -sum_j x_j v_j / (||x|| ||d|| ||W||_F + 1e-12)``.
    """
    zs = z - z.max(axis=1, keepdims=True)
    p = np.exp(zs) / np.exp(zs).sum(axis=1, keepdims=True)
    d = p - np.eye(z.shape[1], dtype=z.dtype)[y]
    v = d @ w
    return -np.sum(x * v, axis=1) / (
        np.linalg.norm(x, axis=1) * np.linalg.norm(d, axis=1) * np.linalg.norm(w) + z.dtype.type(1e-12)
    )


def official_gwa(scores):
    """The per-epoch value of src/train.py: ``np.mean(s) / (scipy.stats.kurtosis(s) + 1.2)``."""
    return np.mean(scores) / (scipy.stats.kurtosis(scores) + 1.2)


def exact_alignment(z, y, x, w):
    """The paper's formula without either numerical choice: float64, ``p_y - 1 = -sum_{k != y} p_k``, no epsilon."""
    z, x, w = (a.astype(np.float64) for a in (z, x, w))
    zs = z - z.max(axis=1, keepdims=True)
    p = np.exp(zs) / np.exp(zs).sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    d = p.copy()
    d[rows, y] = 0.0
    d[rows, y] = -d.sum(axis=1)
    return -np.einsum("nc,cd,nd->n", d, w, x) / (
        np.linalg.norm(d, axis=1) * np.linalg.norm(x, axis=1) * np.linalg.norm(w)
    )


def _batch(margins, seed=0, dtype=np.float64):
    """Logits of a linear head with the label margin ``z_y - max_{k != y} z_k`` set to ``margins``."""
    rng = np.random.default_rng(seed)
    n = len(margins)
    x = rng.normal(size=(n, D))
    w = rng.normal(size=(C, D)) / np.sqrt(D)
    z = x @ w.T
    y = rng.integers(0, C, n)
    others = np.where(np.arange(C) == y[:, None], -np.inf, z).max(axis=1)
    z[np.arange(n), y] = others + np.asarray(margins)
    return z.astype(dtype), y, x.astype(dtype), w.astype(dtype)


def test_non_confident_samples_agree_with_the_official_formula_in_float64():
    z, y, x, w = _batch(np.linspace(-5.0, 5.0, 500))
    assert np.abs(gwa.alignment(z, y, x, w) - official_head_alignment(z, y, x, w)).max() <= 1e-10


def test_gwa_paper_equals_the_official_epoch_value():
    rng = np.random.default_rng(1)
    for scores in (rng.normal(0.05, 0.1, 2000), rng.standard_t(3, 2000) * 0.05, rng.uniform(-0.2, 0.4, 2000)):
        official = official_gwa(scores)
        assert abs(gwa.summarize(scores).gwa_paper - official) <= 1e-12 * abs(official)


def test_in_float32_the_official_formula_cancels_past_margin_17_and_gwa_does_not():
    """p_y rounds to 1 in float32 past a margin of ~17: the official d_y is 0 (rounding), the true one ~ -1e-8."""
    torch = pytest.importorskip("torch")
    import gwa.torch as gwa_torch

    z, y, x, w = _batch(np.linspace(17.0, 30.0, 400), seed=2, dtype=np.float32)
    exact = exact_alignment(z, y, x, w)
    official = official_head_alignment(z, y, x, w)
    ours = gwa_torch.alignment(*map(torch.from_numpy, (z, y, x, w))).numpy()
    assert np.abs(ours - exact).max() <= 1e-6
    assert np.abs(official - exact).max() > 0.05
    assert np.mean(np.sign(official) != np.sign(exact)) > 0.1  # the direction is set by rounding: signs flip
    # Below a margin of ~5 the two agree to float32 rounding.
    z, y, x, w = _batch(np.linspace(0.0, 5.0, 400), seed=3, dtype=np.float32)
    ours = gwa_torch.alignment(*map(torch.from_numpy, (z, y, x, w))).numpy()
    assert np.abs(official_head_alignment(z, y, x, w) - ours).max() <= 1e-5


def test_the_official_epsilon_zeroes_very_confident_samples_even_in_float64():
    """``+ 1e-12`` dominates once ||d|| ~ e^-margin is below it: the official score goes to 0, gwa's does not."""
    z, y, x, w = _batch(np.linspace(45.0, 60.0, 200), seed=4)
    exact = exact_alignment(z, y, x, w)
    assert np.abs(gwa.alignment(z, y, x, w) - exact).max() <= 1e-12
    official = official_head_alignment(z, y, x, w)
    assert np.all(np.abs(official) < 1e-3 * np.abs(exact))
