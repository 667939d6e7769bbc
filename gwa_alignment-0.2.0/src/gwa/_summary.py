r"""The epoch aggregate: the paper's GWA (Eq. 2) verbatim, and a summary that guards its pole.

.. math::

    \mathrm{GWA}_T = \frac{\mathbb{E}[\gamma]}{\mathrm{Kurt}[\gamma] + \beta}, \qquad \beta = 1.2

with Fisher excess kurtosis from biased moments (``scipy.stats.kurtosis`` defaults). Excess kurtosis can
fall to -2 (two point masses), so the denominator reaches zero and turns negative for flat or bimodal score
distributions, which is what label noise produces late in training. :func:`gwa_value` returns the formula
as written; :func:`summarize` returns it together with a guard that says when it is not to be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum

from gwa._moments import Moments
from gwa._validation import check_finite_number, check_positive

#: The paper's beta: minus the excess kurtosis of a uniform distribution.
PAPER_BETA = 1.2
#: Below this denominator the summary is guarded: GWA would amplify the mean more than tenfold, and a
#: small change in kurtosis would swing it arbitrarily (the pole sits at 0, sign flips below).
MIN_DENOMINATOR = 0.1
#: Excess kurtosis + 3 is the Pearson kurtosis m4 / m2**2 >= 1: the denominator of gwa's default value.
PEARSON_OFFSET = 3.0


def _as_moments(scores_or_moments) -> Moments:
    if isinstance(scores_or_moments, Moments):
        return scores_or_moments
    return Moments.from_values(scores_or_moments)


def gwa_value(scores_or_moments, beta: float = PAPER_BETA) -> float:
    """The paper's Eq. 2, verbatim: ``mean / (excess_kurtosis + beta)``.

    No guard: a denominator of zero gives ``±inf`` (or NaN for 0/0), a negative one flips the sign, exactly
    like ``np.mean(s) / (scipy.stats.kurtosis(s) + 1.2)`` in the paper's code. Use :func:`summarize` to be
    told when that happens.

    Args:
        scores_or_moments: per-sample alignment scores (any array) or a :class:`gwa.Moments`.
        beta: the offset added to the excess kurtosis.

    Returns:
        The GWA value as a float; NaN for empty or constant scores (kurtosis undefined).
    """
    beta = check_positive("beta", beta)
    m = _as_moments(scores_or_moments)
    mean, kurt = m.mean, m.excess_kurtosis
    if math.isnan(mean) or math.isnan(kurt):
        return math.nan
    denominator = kurt + beta
    if denominator == 0.0:
        return math.copysign(math.inf, mean) if mean != 0 else math.nan
    return mean / denominator


class GuardCode(str, Enum):
    """Why an epoch's paper value (:attr:`EpochSummary.gwa_paper`) is not to be trusted."""

    NO_SCORES = "no_scores"
    CONSTANT_SCORES = "constant_scores"
    KURTOSIS_POLE = "kurtosis_pole"


@dataclass(frozen=True)
class Guard:
    """A structured guard: a :class:`GuardCode` for programs and a sentence for people."""

    code: GuardCode
    message: str

    def __str__(self) -> str:
        return self.message


def pearson_ratio(mean: float, excess_kurtosis: float) -> float:
    """gwa's default per-epoch value: ``mean / (excess_kurtosis + 3)``, the mean alignment over the *Pearson*
    kurtosis ``m4 / m2**2``.

    The Pearson kurtosis is >= 1 for every distribution, so unlike the paper's ``excess + 1.2`` the denominator
    never reaches zero: the paper's intent (heavy tails lower the value) without its pole, and no constant to
    tune. NaN when either input is NaN (no scores, or constant scores).
    """
    mean, excess_kurtosis = float(mean), float(excess_kurtosis)
    if math.isnan(mean) or math.isnan(excess_kurtosis):
        return math.nan
    return mean / (excess_kurtosis + PEARSON_OFFSET)


@dataclass(frozen=True)
class EpochSummary:
    """Aggregate of one epoch's alignment scores.

    Attributes:
        n: number of scores.
        n_undefined: how many of them were undefined cosines (given :data:`gwa.UNDEFINED_SCORE`).
        mean: mean alignment (the paper's model-comparison statistic is its maximum over epochs).
        std: population standard deviation.
        excess_kurtosis: Fisher excess kurtosis from biased moments.
        gwa: **the value gwa's default criterion ranks epochs by**: ``mean / (excess_kurtosis + 3)``
            (:func:`pearson_ratio`); bounded in [-1, 1], no pole. This is what every surface logs as ``gwa``.
        gwa_paper: the paper's Eq. 2 verbatim, ``mean / (excess_kurtosis + beta)`` (may be huge, negative or
            infinite near the kurtosis pole); see :attr:`guard`.
        denominator: ``excess_kurtosis + beta``, the paper value's denominator.
        guard: ``None`` when :attr:`gwa_paper` can be trusted, else a :class:`Guard` saying why not.
        beta: the beta used.
    """

    n: int
    n_undefined: int
    mean: float
    std: float
    excess_kurtosis: float
    gwa: float
    gwa_paper: float
    denominator: float
    guard: Guard | None
    beta: float = PAPER_BETA

    @property
    def flagged(self) -> bool:
        """True when :attr:`gwa_paper` sits at or past the kurtosis pole (or is undefined)."""
        return self.guard is not None

    @property
    def gwa_paper_or_nan(self) -> float:
        """:attr:`gwa_paper` when trusted, else NaN (the paper's rule with the pole masked)."""
        return math.nan if self.flagged else self.gwa_paper

    def metrics(self) -> dict:
        """The per-epoch metric keys of the run directory and the loggers (JSON-safe: non-finite as ``None``).

        ``gwa`` is the default criterion's value, ``gwa_paper`` the paper's verbatim value with
        ``gwa_paper_flagged`` and the guard's code and message.
        """
        row = {
            "align_mean": self.mean,
            "align_std": self.std,
            "align_excess_kurtosis": self.excess_kurtosis,
            "gwa": self.gwa,
            "gwa_paper": self.gwa_paper,
            "gwa_paper_flagged": self.flagged,
            "gwa_guard": None if self.guard is None else self.guard.code.value,
            "gwa_guard_message": None if self.guard is None else self.guard.message,
            "n_scores": self.n,
            "n_undefined": self.n_undefined,
        }
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}

    def as_dict(self) -> dict:
        """Plain dict with non-finite floats as ``None`` (JSON-safe), the guard as its code, ``flagged`` added."""
        out = {k: getattr(self, k) for k in (f.name for f in fields(self))}
        out["guard"] = None if self.guard is None else self.guard.code.value
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
        out["flagged"] = self.flagged
        return out


def summarize(
    scores_or_moments,
    *,
    beta: float = PAPER_BETA,
    n_undefined: int = 0,
    min_denominator: float = MIN_DENOMINATOR,
) -> EpochSummary:
    """Summarize one epoch's alignment scores: gwa's default value, the paper's GWA, and a guard on its pole.

    Args:
        scores_or_moments: per-sample scores (any array) or a :class:`gwa.Moments` of them.
        beta: the paper's beta.
        n_undefined: number of undefined cosines among the scores (reported, not recomputed).
        min_denominator: the paper value is guarded when ``excess_kurtosis + beta`` falls below this.

    Returns:
        An :class:`EpochSummary`: ``gwa`` is the default criterion's value, ``gwa_paper`` the verbatim Eq. 2,
        and ``guard`` a :class:`Guard` (code ``no_scores``, ``constant_scores`` or ``kurtosis_pole``) when the
        paper value is not to be trusted.

    Example:
        >>> import numpy as np, gwa
        >>> s = gwa.summarize(np.r_[np.full(50, 0.9), np.full(50, -0.1)])
        >>> round(s.mean, 3), round(s.excess_kurtosis, 3), round(s.gwa, 3), round(s.gwa_paper, 3)
        (0.4, -2.0, 0.4, -0.5)
        >>> s.guard.code.value
        'kurtosis_pole'
    """
    beta = check_positive("beta", beta)
    min_denominator = check_finite_number("min_denominator", min_denominator)
    m = _as_moments(scores_or_moments)
    kurt = m.excess_kurtosis
    denominator = kurt + beta
    guard: Guard | None = None
    if m.n == 0:
        guard = Guard(GuardCode.NO_SCORES, "no scores")
    elif math.isnan(kurt):
        guard = Guard(GuardCode.CONSTANT_SCORES, "constant scores: kurtosis undefined")
    elif denominator <= min_denominator:
        guard = Guard(
            GuardCode.KURTOSIS_POLE,
            f"kurtosis pole: excess kurtosis {kurt:.3g} + beta {beta:.3g} = {denominator:.3g} "
            f"<= {min_denominator:.3g} (flat or bimodal scores)",
        )
    return EpochSummary(
        n=m.n,
        n_undefined=int(n_undefined),
        mean=m.mean,
        std=m.std,
        excess_kurtosis=kurt,
        gwa=pearson_ratio(m.mean, kurt),
        gwa_paper=gwa_value(m, beta),
        denominator=denominator,
        guard=guard,
        beta=beta,
    )
