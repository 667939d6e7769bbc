"""Paired differences over settings x seeds with a two-level bootstrap interval (docs/protocol.md, section 4).

The pooled estimate is the mean over settings of each setting's mean over its seeds. A resample draws settings
with replacement and, independently for every drawn setting, its seeds with replacement; the interval is the
percentile interval of the resampled pooled estimates.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

RESAMPLES = 10_000
SEED = 20261129


def pooled_mean(diffs: Mapping[Hashable, Sequence[float]]) -> float:
    """Mean over settings of the per-setting mean; NaN for no settings."""
    means = [float(np.mean(v)) for v in diffs.values() if len(v)]
    return float(np.mean(means)) if means else float("nan")


def two_level_bootstrap(
    diffs: Mapping[Hashable, Sequence[float]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """``(pooled mean, low, high)`` of per-(setting, seed) paired differences ``{setting: [d_seed, ...]}``.

    Example:
        >>> two_level_bootstrap({"a": [1.0, 1.0], "b": [3.0, 3.0]}, resamples=2000)[0]
        2.0
    """
    values = [np.asarray(v, dtype=np.float64) for v in diffs.values() if len(v)]
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n_settings = len(values)
    picks = rng.integers(0, n_settings, size=(resamples, n_settings))
    totals = np.zeros(resamples)
    for j in range(n_settings):
        for s in np.unique(picks[:, j]):
            rows = np.flatnonzero(picks[:, j] == s)
            v = values[s]
            draws = rng.integers(0, v.size, size=(rows.size, v.size))
            totals[rows] += v[draws].mean(axis=1)
    boot = totals / n_settings
    alpha = (1.0 - level) / 2
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return pooled_mean(diffs), float(low), float(high)


def format_interval(estimate: tuple[float, float, float], scale: float = 1.0, digits: int = 2) -> str:
    """``+1.23 [-0.40, +2.10]``; ``–`` for NaN."""
    mean, low, high = (scale * x for x in estimate)
    if not np.isfinite(mean):
        return "–"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
