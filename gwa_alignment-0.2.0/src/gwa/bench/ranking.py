"""Rank agreement between a statistic and a target over groups of runs, with a bootstrap interval over seeds.

Each group (an architecture, a width) has several runs (seeds); a group's value is the mean over its runs. Kendall's
tau (``scipy.stats.kendalltau``, tau-b) compares the groups' ranking by the statistic with their ranking by the
target. The interval resamples, independently in every group, its runs with replacement (the statistic and the
target of a run stay paired) and recomputes tau: it covers the seed-to-seed noise of the group means, not the
choice of groups.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gwa.bench.paired import RESAMPLES, SEED


@dataclass(frozen=True)
class TauInterval:
    """Kendall's tau over the group means, its percentile interval, scipy's p-value, and the group count."""

    tau: float
    low: float
    high: float
    pvalue: float
    groups: int
    resamples: int

    def format(self, digits: int = 2) -> str:
        if not math.isfinite(self.tau):
            return "undefined"
        return f"{self.tau:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _paired_arrays(
    statistic: Mapping[Hashable, Sequence[float]], target: Mapping[Hashable, Sequence[float]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    if set(statistic) != set(target):
        raise ValueError(
            f"Expected `statistic` and `target` to have the same groups; got {sorted(map(str, statistic))} and "
            f"{sorted(map(str, target))}."
        )
    pairs = []
    for group in statistic:
        s = np.asarray(statistic[group], dtype=np.float64)
        t = np.asarray(target[group], dtype=np.float64)
        if s.ndim != 1 or s.shape != t.shape or s.size == 0:
            raise ValueError(
                f"Expected group {group!r} to have one or more runs, as many statistic as target values; got "
                f"{s.size} and {t.size}."
            )
        if not (np.isfinite(s).all() and np.isfinite(t).all()):
            raise ValueError(f"Expected finite values in group {group!r}; got {s.tolist()} and {t.tolist()}.")
        pairs.append((s, t))
    if len(pairs) < 3:
        raise ValueError(f"Expected at least 3 groups to rank; got {len(pairs)}.")
    return pairs


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant column has no ranking
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def kendall_tau_interval(
    statistic: Mapping[Hashable, Sequence[float]],
    target: Mapping[Hashable, Sequence[float]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> TauInterval:
    """Kendall's tau between the group means of ``statistic`` and of ``target`` (``{group: [per run]}``), with a
    bootstrap interval that resamples each group's runs (pairs kept together).

    Resamples where either column is constant (tau undefined) are left out of the interval.

    Example:
        >>> r = kendall_tau_interval({"a": [1, 1], "b": [2, 2], "c": [3, 3]}, {"a": [5, 5], "b": [6, 6], "c": [7, 7]},
        ...                          resamples=200)
        >>> (r.tau, r.low, r.high)
        (1.0, 1.0, 1.0)
    """
    from scipy import stats

    pairs = _paired_arrays(statistic, target)
    s_mean = np.array([s.mean() for s, _ in pairs])
    t_mean = np.array([t.mean() for _, t in pairs])
    tau = _tau(s_mean, t_mean)
    pvalue = float(stats.kendalltau(s_mean, t_mean).pvalue) if math.isfinite(tau) else math.nan
    rng = np.random.default_rng(seed)
    boot_s = np.empty((resamples, len(pairs)))
    boot_t = np.empty((resamples, len(pairs)))
    for j, (s, t) in enumerate(pairs):
        draws = rng.integers(0, s.size, size=(resamples, s.size))
        boot_s[:, j], boot_t[:, j] = s[draws].mean(axis=1), t[draws].mean(axis=1)
    taus = np.array([_tau(a, b) for a, b in zip(boot_s, boot_t)])
    taus = taus[np.isfinite(taus)]
    if taus.size == 0:
        low = high = math.nan
    else:
        alpha = (1.0 - level) / 2
        low, high = (float(q) for q in np.quantile(taus, [alpha, 1.0 - alpha]))
    return TauInterval(tau, low, high, pvalue, len(pairs), int(taus.size))
