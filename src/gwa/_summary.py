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
from dataclasses import asdict, dataclass

from gwa._moments import Moments
from gwa._validation import check_positive

#: The paper's beta: minus the excess kurtosis of a uniform distribution.
PAPER_BETA = 1.2
#: Below this denominator the summary is guarded: GWA would amplify the mean more than tenfold, and a
#: small change in kurtosis would swing it arbitrarily (the pole sits at 0, sign flips below).
MIN_DENOMINATOR = 0.1


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


@dataclass(frozen=True)
class EpochSummary:
    """Aggregate of one epoch's alignment scores.

    Attributes:
        n: number of scores.
        n_undefined: how many of them were undefined cosines (given :data:`gwa.UNDEFINED_SCORE`).
        mean: mean alignment (the paper's model-comparison statistic is its maximum over epochs).
        std: population standard deviation.
        excess_kurtosis: Fisher excess kurtosis from biased moments.
        denominator: ``excess_kurtosis + beta``.
        gwa: the paper's value, verbatim (may be huge, negative or infinite near the pole).
        guard: ``None`` when the value can be trusted, else the reason it cannot.
        beta: the beta used.
    """

    n: int
    n_undefined: int
    mean: float
    std: float
    excess_kurtosis: float
    denominator: float
    gwa: float
    guard: str | None
    beta: float = PAPER_BETA

    @property
    def flagged(self) -> bool:
        """True when :attr:`gwa` sits at or past the kurtosis pole (or is undefined)."""
        return self.guard is not None

    @property
    def gwa_or_nan(self) -> float:
        """:attr:`gwa` when trusted, else NaN: the value a stop rule should see."""
        return math.nan if self.flagged else self.gwa

    def as_dict(self) -> dict:
        """Plain dict with non-finite floats as ``None`` (JSON-safe) and ``flagged`` added."""
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        out["flagged"] = self.flagged
        return out


def summarize(scores_or_moments, *, beta: float = PAPER_BETA, n_undefined: int = 0,
              min_denominator: float = MIN_DENOMINATOR) -> EpochSummary:
    """Summarize one epoch's alignment scores, with the paper's GWA and a guard on its pole.

    Args:
        scores_or_moments: per-sample scores (any array) or a :class:`gwa.Moments` of them.
        beta: the paper's beta.
        n_undefined: number of undefined cosines among the scores (reported, not recomputed).
        min_denominator: the summary is guarded when ``excess_kurtosis + beta`` falls below this.

    Returns:
        An :class:`EpochSummary`. Its ``gwa`` is always the verbatim value; its ``guard`` says
        ``"no scores"``, ``"constant scores: kurtosis undefined"`` or
        ``"kurtosis pole: excess kurtosis -1.58 + beta 1.2 = -0.38 <= 0.1 (flat or bimodal scores)"``.

    Example:
        >>> import numpy as np, gwa
        >>> s = gwa.summarize(np.r_[np.full(50, 0.9), np.full(50, -0.1)])
        >>> round(s.mean, 3), round(s.excess_kurtosis, 3), round(s.gwa, 3), s.flagged
        (0.4, -2.0, -0.5, True)
    """
    beta = check_positive("beta", beta)
    min_denominator = float(min_denominator)
    m = _as_moments(scores_or_moments)
    kurt = m.excess_kurtosis
    value = gwa_value(m, beta)
    denominator = kurt + beta
    if m.n == 0:
        guard = "no scores"
    elif math.isnan(kurt):
        guard = "constant scores: kurtosis undefined"
    elif denominator <= min_denominator:
        guard = (f"kurtosis pole: excess kurtosis {kurt:.3g} + beta {beta:.3g} = {denominator:.3g} "
                 f"<= {min_denominator:.3g} (flat or bimodal scores)")
    else:
        guard = None
    return EpochSummary(n=m.n, n_undefined=int(n_undefined), mean=m.mean, std=m.std, excess_kurtosis=kurt,
                        denominator=denominator, gwa=value, guard=guard, beta=beta)
