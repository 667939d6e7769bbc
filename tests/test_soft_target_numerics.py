"""Probability rows are scored as exactly as class ids (issue 20): float32, label margins up to 50.

The direct ``p - t`` cancels in the largest-target entry when ``p_k`` and ``t_k`` both round to 1 (an error up to
about 0.2 past a margin of about 17 in float32); every kernel computes that entry as minus the sum of the others.
"""

from __future__ import annotations

import numpy as np
import pytest

import gwa

C, D = 10, 16


def _batch(n: int = 300, max_margin: float = 50.0, seed: int = 0):
    """float32 logits whose label margin z_y - max_{k != y} z_k runs from 0 to ``max_margin``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    w = rng.normal(size=(C, D)).astype(np.float32)
    y = rng.integers(0, C, n)
    z = rng.normal(size=(n, C))
    rows = np.arange(n)
    others = np.where(np.arange(C) == y[:, None], -np.inf, z).max(axis=1)
    z[rows, y] = others + np.linspace(0.0, max_margin, n)
    return z.astype(np.float32), y, x, w


def _exact_soft_reference(z, t, x, w) -> np.ndarray:
    """The cosine of -grad_W of ``-sum_j t_j log softmax(z)_j`` in float64, written out: ``d = S p - t``.

    ``S = sum_j t_j`` (1 up to the float32 rounding of the targets). Smoothed targets keep ``d_k`` far from 0, so
    the float64 subtraction is exact to ~1e-16 here.
    """
    z, t, x, w = (a.astype(np.float64) for a in (z, t, x, w))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d = t.sum(axis=1, keepdims=True) * p - t
    numerator = -np.einsum("nc,cd,nd->n", d, w, x)
    return numerator / (np.linalg.norm(d, axis=1) * np.linalg.norm(x, axis=1) * np.linalg.norm(w))


def _backend(name: str):
    """``alignment(z, targets, x, w) -> numpy scores`` of one kernel, fed float32 arrays."""
    if name == "numpy":
        return lambda z, t, x, w: gwa.alignment(z, t, x, w)
    if name == "torch":
        torch = pytest.importorskip("torch")
        import gwa.torch as gwa_torch

        return lambda z, t, x, w: gwa_torch.alignment(*map(torch.from_numpy, (z, t, x, w))).numpy()
    if name == "torch-tracker":
        torch = pytest.importorskip("torch")
        from gwa.torch._kernel import capture_terms, fused_scores, fused_soft_scores

        def tracker_path(z, t, x, w):
            z_t, t_t = torch.from_numpy(z), torch.from_numpy(t)
            terms = capture_terms(
                torch.from_numpy(x), torch.from_numpy(w), None, None, include_bias=False, dtype=torch.float32
            )
            if t_t.ndim == 1:
                return fused_scores(z_t, t_t.long()[:, None], terms).numpy()
            return fused_soft_scores(z_t, t_t, terms)[0].numpy()

        return tracker_path
    jnp = pytest.importorskip("jax.numpy")
    import gwa.jax as gwa_jax

    return lambda z, t, x, w: np.asarray(gwa_jax.alignment(*map(jnp.asarray, (z, t, x, w))))


BACKENDS = ("numpy", "torch", "torch-tracker", "jax")


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_rows_equal_class_ids_at_margins_up_to_50(backend):
    z, y, x, w = _batch()
    align = _backend(backend)
    one_hot = np.eye(C, dtype=np.float32)[y]
    by_ids, by_rows = align(z, y, x, w), align(z, one_hot, x, w)
    assert np.abs(by_rows - by_ids).max() <= 1e-6
    # And both are the float64 value (the class-id path was exact before; the margins reach 50).
    assert (
        np.abs(
            by_ids - gwa.alignment(z.astype(np.float64), y, x.astype(np.float64), w.astype(np.float64))
        ).max()
        <= 1e-6
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_one_hot_rows_match_the_float64_gradient(backend):
    """Rows with t_k = 1 - 1e-6 (a smoothing below float32's resolution of 1 - p_k at these margins)."""
    z, y, x, w = _batch(seed=1)
    t = np.full((len(y), C), 1e-6 / (C - 1))
    t[np.arange(len(y)), y] = 1.0 - 1e-6
    t = t.astype(np.float32)
    got = _backend(backend)(z, t, x, w)
    assert np.abs(got - _exact_soft_reference(z, t, x, w)).max() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.1, 0.01])
def test_smoothed_rows_match_the_float64_gradient(backend, eps):
    z, y, x, w = _batch(seed=2)
    t = ((1 - eps) * np.eye(C)[y] + eps / C).astype(np.float32)
    got = _backend(backend)(z, t, x, w)
    assert np.abs(got - _exact_soft_reference(z, t, x, w)).max() <= 1e-6


def test_the_direct_difference_would_fail_these_tests():
    """The test above is not vacuous: ``softmax - onehot`` in float32 is off by more than 0.1 at these margins."""
    z, y, x, w = _batch()
    zs = z - z.max(axis=1, keepdims=True)
    p = np.exp(zs) / np.exp(zs).sum(axis=1, keepdims=True)  # float32 throughout
    d = p - np.eye(C, dtype=np.float32)[y]
    naive = -np.einsum("nc,cd,nd->n", d, w, x) / (
        np.linalg.norm(d, axis=1) * np.linalg.norm(x, axis=1) * np.linalg.norm(w)
    )
    exact = gwa.alignment(z.astype(np.float64), y, x.astype(np.float64), w.astype(np.float64))
    finite = np.isfinite(naive)
    assert np.abs(naive[finite] - exact[finite]).max() > 0.1
