"""Intervals for a crossed design: every seed runs in every setting (docs/protocol.md, grid H″).

In the held-out grids one seed fixes the data subset, the label noise, the initialisation and the split in every
setting, so the paired differences ``d[s, k]`` (setting s, seed k) share a seed effect:
``d[s, k] = mu + a_s + b_k + e_sk``. Resampling seeds independently within settings (the two-level bootstrap of
:mod:`gwa.bench.paired`) treats the design as nested and undercovers (0.51-0.78 in the audit's simulation).

Two estimands, each with its interval:

- **these settings** (:func:`settings_interval`): the mean over the given settings of their seed means. Its error
  is the seed average of ``b_k + mean_s e_sk``, independent across seeds, so a Student t interval on the per-seed
  means across settings is exact under normal effects, at any seed count.
- **the family** (:func:`family_interval`): the settings are draws from a population too (``a_s`` random), as in
  "class-pair noise on MLPs" in general. Two-way random-effects ANOVA: ``Var = (MS_S + MS_K - MS_E) / (S K)``, with
  Satterthwaite's degrees of freedom. With two settings the interval is wide: that is the evidence.

One setting's seeds get a Student t interval (:func:`setting_interval`). The joint-seed percentile bootstrap
(:func:`seed_bootstrap`: a resample draws seeds, the same draw in every setting) estimates the right quantity but
undercovers at 5-10 seeds; ``experiments/heldout_coverage.py`` measures every method at 5 and 10 seeds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 20261207


@dataclass(frozen=True)
class Interval:
    """A point estimate, its interval, and what the interval is for."""

    mean: float
    low: float
    high: float
    level: float
    estimand: str  # "setting", "these settings" or "family"
    method: str
    n_settings: int
    n_seeds: int

    def format(self, digits: int = 2) -> str:
        """``+1.23 [-0.40, +2.10]``; ``–`` when there is nothing to estimate."""
        if not np.isfinite(self.mean):
            return "–"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.mean:+.{digits}f} [–]"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _t_quantile(level: float, df: np.ndarray | float) -> np.ndarray:
    from scipy import stats

    return np.asarray(stats.t.ppf(0.5 + level / 2, df))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"Expected `level` in (0, 1); got {level!r}.")


def crossed_table(diffs: Mapping[Hashable, Mapping[int, float]]) -> tuple[list, list[int], np.ndarray]:
    """``(settings, seeds, d (S, K))`` over the seeds present in *every* setting (a complete crossed table);
    seeds missing from a setting are dropped everywhere, so every setting mean is over the same seeds."""
    settings = [s for s, v in diffs.items() if len(v)]
    if not settings:
        return [], [], np.zeros((0, 0))
    seeds = sorted(set.intersection(*(set(diffs[s]) for s in settings)))
    d = np.array([[float(diffs[s][k]) for k in seeds] for s in settings], dtype=np.float64).reshape(
        len(settings), len(seeds)
    )
    return settings, seeds, d


def t_bounds(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student t interval of the mean along the last axis (vectorised): ``(mean, low, high)``."""
    _check_level(level)
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[-1]
    mean = v.mean(axis=-1)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    half = _t_quantile(level, n - 1) * v.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def family_bounds(d: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-way random-effects interval of the grand mean of ``d (..., S, K)`` (vectorised over leading axes)."""
    _check_level(level)
    d = np.asarray(d, dtype=np.float64)
    n_s, n_k = d.shape[-2:]
    grand = d.mean(axis=(-2, -1))
    if n_s < 2 or n_k < 2:
        nan = np.full_like(grand, np.nan)
        return grand, nan, nan
    row = d.mean(axis=-1)  # setting means
    col = d.mean(axis=-2)  # seed means
    ms_s = n_k * ((row - grand[..., None]) ** 2).sum(axis=-1) / (n_s - 1)
    ms_k = n_s * ((col - grand[..., None]) ** 2).sum(axis=-1) / (n_k - 1)
    resid = d - row[..., :, None] - col[..., None, :] + grand[..., None, None]
    df_e = (n_s - 1) * (n_k - 1)
    ms_e = (resid**2).sum(axis=(-2, -1)) / df_e
    # Var(grand) = sigma_a^2/S + sigma_b^2/K + sigma_e^2/(SK) = (MS_S + MS_K - MS_E)/(SK); the ANOVA combination
    # can go below MS_E / (SK) (the variance with no setting or seed effect), which is its floor.
    combo = np.maximum(ms_s + ms_k - ms_e, ms_e)
    var = combo / (n_s * n_k)
    # Satterthwaite: df of a linear combination of mean squares (the negative term enters squared too).
    with np.errstate(divide="ignore", invalid="ignore"):
        df = combo**2 / (ms_s**2 / (n_s - 1) + ms_k**2 / (n_k - 1) + ms_e**2 / df_e)
    df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
    half = _t_quantile(level, np.maximum(df, 1.0)) * np.sqrt(var)
    return grand, grand - half, grand + half


def setting_interval(values, level: float = LEVEL) -> Interval:
    """One setting's seeds: Student t interval of their mean."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level, "setting", "t", 1, 0)
    mean, low, high = (float(x) for x in t_bounds(v, level))
    return Interval(mean, low, high, level, "setting", "t", 1, int(v.size))


def settings_interval(diffs: Mapping[Hashable, Mapping[int, float]], level: float = LEVEL) -> Interval:
    """Estimand *these settings*: the mean of the setting means; t interval on the per-seed means across
    settings (``diffs`` = ``{setting: {seed: difference}}``, crossed: the same seeds in every setting)."""
    settings, seeds, d = crossed_table(diffs)
    if not seeds:
        return Interval(float("nan"), float("nan"), float("nan"), level, "these settings", "seed t", 0, 0)
    mean, low, high = (float(x) for x in t_bounds(d.mean(axis=0), level))
    return Interval(mean, low, high, level, "these settings", "seed t", len(settings), len(seeds))


def family_interval(diffs: Mapping[Hashable, Mapping[int, float]], level: float = LEVEL) -> Interval:
    """Estimand *the family* the settings stand for: two-way random-effects ANOVA interval (Satterthwaite)."""
    settings, seeds, d = crossed_table(diffs)
    if not seeds:
        return Interval(float("nan"), float("nan"), float("nan"), level, "family", "two-way ANOVA", 0, 0)
    mean, low, high = (float(x) for x in family_bounds(d, level))
    return Interval(mean, low, high, level, "family", "two-way ANOVA", len(settings), len(seeds))


def seed_bootstrap(
    diffs: Mapping[Hashable, Mapping[int, float]],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Estimand *these settings*, percentile bootstrap that resamples seeds jointly across settings (one draw of
    seeds used in every setting). Kept for comparison: it undercovers at 5-10 seeds."""
    _check_level(level)
    settings, seeds, d = crossed_table(diffs)
    if not seeds:
        return Interval(
            float("nan"), float("nan"), float("nan"), level, "these settings", "seed bootstrap", 0, 0
        )
    per_seed = d.mean(axis=0)
    draws = np.random.default_rng(seed).integers(0, per_seed.size, size=(resamples, per_seed.size))
    boot = per_seed[draws].mean(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return Interval(
        float(per_seed.mean()), float(low), float(high), level, "these settings", "seed bootstrap",
        len(settings), len(seeds),
    )  # fmt: skip


def simulate_crossed(
    replicates: int,
    n_settings: int,
    n_seeds: int,
    *,
    setting_sd: float,
    seed_sd: float,
    residual_sd: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic crossed designs with true mean 0: ``(d (R, S, K), setting effects (R, S))``."""
    a = rng.normal(0, setting_sd, size=(replicates, n_settings))
    b = rng.normal(0, seed_sd, size=(replicates, 1, n_seeds))
    e = rng.normal(0, residual_sd, size=(replicates, n_settings, n_seeds))
    return a[:, :, None] + b + e, a


def coverage(
    method: str,
    *,
    n_settings: int,
    n_seeds: int,
    setting_sd: float = 1.0,
    seed_sd: float = 1.5,
    residual_sd: float = 0.5,
    replicates: int = 2000,
    level: float = LEVEL,
    resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Share of simulated crossed designs whose interval covers its estimand's true value.

    Methods: ``settings_t`` and ``seed_bootstrap`` (true value: the mean of the drawn settings' effects),
    ``family`` (true value 0), ``setting_t`` and ``setting_bootstrap`` (one setting: the first, true value its
    effect), ``two_level`` (the nested bootstrap of :mod:`gwa.bench.paired`, for the settings estimand).
    """
    rng = np.random.default_rng(seed)
    d, a = simulate_crossed(
        replicates,
        n_settings,
        n_seeds,
        setting_sd=setting_sd,
        seed_sd=seed_sd,
        residual_sd=residual_sd,
        rng=rng,
    )
    truth = a.mean(axis=1)
    if method == "settings_t":
        _, low, high = t_bounds(d.mean(axis=1), level)
    elif method == "family":
        _, low, high = family_bounds(d, level)
        truth = np.zeros(replicates)
    elif method == "seed_bootstrap":
        per_seed = d.mean(axis=1)
        boot = per_seed[:, rng.integers(0, n_seeds, size=(resamples, n_seeds))].mean(axis=2)
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
    elif method in ("setting_t", "setting_bootstrap"):
        truth = a[:, 0]
        one = d[:, 0, :]
        if method == "setting_t":
            _, low, high = t_bounds(one, level)
        else:
            boot = one[:, rng.integers(0, n_seeds, size=(resamples, n_seeds))].mean(axis=2)
            low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
    elif method == "two_level":
        picks = rng.integers(0, n_settings, size=(resamples, n_settings))
        seeds = rng.integers(0, n_seeds, size=(resamples, n_settings, n_seeds))
        boot = d[:, picks[:, :, None], seeds].mean(axis=(2, 3))
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
    else:
        raise ValueError(
            "Expected `method` to be one of settings_t, family, seed_bootstrap, setting_t, setting_bootstrap, "
            f"two_level; got {method!r}."
        )
    return float(np.mean((low <= truth) & (truth <= high)))
