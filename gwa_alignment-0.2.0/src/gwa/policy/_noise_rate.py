"""The label-noise rate of a training set, estimated from its per-sample alignment (no clean labels needed).

A mislabeled sample's loss gradient points against the head's weights until the model memorises it, so its
alignment averaged over the epochs is negative; a correctly labeled one's is positive. Two estimators over the
per-sample mean alignment ``m_i`` of an ``(E, N)`` matrix (NaN = unseen):

- ``negative_share`` (default): the share of samples with ``m_i < 0``.
- ``mixture``: a two-component 1-D Gaussian mixture fitted to ``m_i`` by EM; the weight of the lower component
  when its mean is negative and the components are separated (Ashman's D > 2), else 0.

Both count hard, atypical clean samples as noise and miss flipped samples memorised early; class-pair
(asymmetric) noise that the model learns as a rule keeps its flipped samples positive and is underestimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_RATE_METHODS = ("negative_share", "mixture")
#: Ashman's D above which the mixture's two components count as separate modes.
MIN_SEPARATION = 2.0


@dataclass(frozen=True)
class NoiseRateEstimate:
    """An estimated label-noise rate: ``rate`` in [0, 1], over ``n_samples`` samples, with the mixture's modes."""

    rate: float
    method: str
    n_samples: int
    low_mean: float  # mean of the lower mode (negative_share: mean of the samples below 0)
    high_mean: float  # mean of the upper mode (negative_share: mean of the samples at or above 0)
    separation: float  # Ashman's D of the two-component fit (NaN for negative_share)


def per_sample_mean(matrix) -> np.ndarray:
    """Mean alignment of every sample seen at least once; ``(E, N)`` (NaN = unseen) -> ``(n_seen,)``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"Expected `matrix` of shape (epochs, samples); got shape={m.shape}.")
    seen = np.isfinite(m)
    count = seen.sum(axis=0)
    ok = count > 0
    return np.where(seen, m, 0.0).sum(axis=0)[ok] / count[ok]


def _two_gaussians(x: np.ndarray, iterations: int = 200) -> tuple[float, float, float, float, float]:
    """EM for a two-component 1-D Gaussian mixture started at the quartiles: (w_low, mu_low, mu_high, sd_low,
    sd_high), the low component the one with the smaller mean."""
    mu = np.quantile(x, [0.25, 0.75]).astype(np.float64)
    sd = np.full(2, max(float(x.std()), 1e-6) / 2)
    w = np.array([0.5, 0.5])
    for _ in range(iterations):
        dens = w / (sd * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2)
        resp = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = np.maximum(resp.sum(axis=0), 1e-12)
        w, mu = nk / x.size, (resp * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt(np.maximum((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk, 1e-12))
    lo, hi = (0, 1) if mu[0] <= mu[1] else (1, 0)
    return float(w[lo]), float(mu[lo]), float(mu[hi]), float(sd[lo]), float(sd[hi])


def estimate_noise_rate(matrix, *, method: str = "negative_share") -> NoiseRateEstimate:
    """Estimate the share of mislabeled training samples from an ``(E, N)`` alignment matrix (NaN = unseen).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> m = np.concatenate([rng.normal(0.06, 0.02, (5, 700)), rng.normal(-0.05, 0.02, (5, 300))], axis=1)
        >>> round(estimate_noise_rate(m).rate, 2), round(estimate_noise_rate(m, method="mixture").rate, 2)
        (0.3, 0.3)
    """
    if method not in NOISE_RATE_METHODS:
        raise ValueError(f"Expected `method` to be one of {', '.join(NOISE_RATE_METHODS)}; got {method!r}.")
    x = per_sample_mean(matrix)
    if x.size == 0:
        raise ValueError("Expected at least one sample seen in some epoch; got none.")
    if method == "negative_share":
        neg = x < 0

        def mean(v):
            return float(v.mean()) if v.size else float("nan")

        return NoiseRateEstimate(
            float(neg.mean()), method, int(x.size), mean(x[neg]), mean(x[~neg]), float("nan")
        )
    if x.size < 4 or float(x.std()) == 0.0:
        return NoiseRateEstimate(0.0, method, int(x.size), float(x.mean()), float(x.mean()), 0.0)
    w_low, mu_low, mu_high, sd_low, sd_high = _two_gaussians(x)
    separation = float(np.sqrt(2) * abs(mu_high - mu_low) / np.sqrt(sd_low**2 + sd_high**2))
    rate = w_low if (mu_low < 0 and separation > MIN_SEPARATION) else 0.0
    return NoiseRateEstimate(rate, method, int(x.size), mu_low, mu_high, separation)
