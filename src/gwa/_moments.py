"""Streaming, exactly mergeable central moments up to order four.

The state is ``(n, mean, M2, M3, M4)`` with ``Mk = sum (x - mean)^k``. Batches are reduced with a two-pass
formula, then combined with the pairwise update of Chan et al. (1979) extended to the third and fourth
moments by Pébay (2008). Merging shards in any order gives the same moments as one pass over their union,
up to rounding, which is what makes per-device and per-rank statistics exact under data parallelism.

References:
    Pébay. Formulas for robust, one-pass parallel computation of covariances and arbitrary-order statistical
    moments. Sandia report SAND2008-6212, 2008.
    Chan, Golub, LeVeque. Updating formulae and a pairwise algorithm for computing sample variances. 1979.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gwa._validation import check_finite, describe


class MomentState(NamedTuple):
    """Plain moment state: count, mean and central sums of powers 2, 3, 4."""

    n: float
    mean: float
    m2: float
    m3: float
    m4: float


EMPTY = MomentState(0.0, 0.0, 0.0, 0.0, 0.0)
#: Version of :meth:`Moments.state_dict`'s layout.
STATE_FORMAT = 1


def check_state(state, name: str = "state") -> MomentState:
    """Validate a moment state (a mapping with n, mean, m2, m3, m4, optionally ``format``); return it.

    Shared by :meth:`Moments.from_state_dict` and the adapters, so that no state loads that could not have
    been produced by streaming real numbers.
    """
    if not hasattr(state, "keys"):
        raise TypeError(
            f"Expected `{name}` to be a mapping with keys {', '.join(MomentState._fields)}; got "
            f"{type(state).__name__}."
        )
    version = state.get("format", STATE_FORMAT)
    if version != STATE_FORMAT:
        raise ValueError(f"Expected `{name}` of moments state format {STATE_FORMAT}; got format {version!r}.")
    missing = [k for k in MomentState._fields if k not in state]
    if missing:
        raise ValueError(
            f"Expected `{name}` to hold {', '.join(MomentState._fields)}; missing {', '.join(missing)}."
        )
    out = MomentState(**{key: check_finite(f"{name}['{key}']", state[key]) for key in MomentState._fields})
    if out.n < 0 or out.n != math.floor(out.n):
        raise ValueError(f"Expected `{name}['n']` to be a count (a whole number >= 0); got {state['n']!r}.")
    if out.m2 < 0:
        raise ValueError(f"Expected `{name}['m2']` (a sum of squares) >= 0; got {state['m2']!r}.")
    if out.n == 0 and out != EMPTY:
        raise ValueError(
            f"Expected the moments of an empty `{name}` (n=0) to be 0; got {dict(out._asdict())}."
        )
    return out


def batch_state(values) -> MomentState:
    """Moments of one batch by a two-pass reduction in float64."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return EMPTY
    mean = float(x.mean())
    dev = x - mean
    # The first pass's mean carries rounding error; fold the residual mean back in (corrected two-pass).
    residual = float(dev.mean())
    mean += residual
    dev = dev - residual
    dev2 = dev * dev
    return MomentState(
        float(n), mean, float(dev2.sum()), float((dev2 * dev).sum()), float((dev2 * dev2).sum())
    )


def pairwise_moments(a, b, n_divisor):
    """Pébay's (2008, eqs. 2.1-2.3) merged ``(mean, m2, m3, m4)`` of two disjoint sets, on any array type: numpy
    floats here, jax arrays in :func:`gwa.jax.moments_merge` (one formula for both). ``a`` and ``b`` have ``n``,
    ``mean``, ``m2``, ``m3``, ``m4``; ``n_divisor`` is ``a.n + b.n``, or a safe stand-in where both may be empty."""
    na, nb = a.n, b.n
    delta = b.mean - a.mean
    delta_n = delta / n_divisor
    mean = a.mean + nb * delta_n
    m2 = a.m2 + b.m2 + delta * delta_n * na * nb
    m3 = (
        a.m3
        + b.m3
        + delta * delta_n * delta_n * na * nb * (na - nb)
        + 3.0 * delta_n * (na * b.m2 - nb * a.m2)
    )
    m4 = (
        a.m4
        + b.m4
        + delta * delta_n**3 * na * nb * (na * na - na * nb + nb * nb)
        + 6.0 * delta_n * delta_n * (na * na * b.m2 + nb * nb * a.m2)
        + 4.0 * delta_n * (na * b.m3 - nb * a.m3)
    )
    return mean, m2, m3, m4


def merge_states(a: MomentState, b: MomentState) -> MomentState:
    """Combine the moments of two disjoint sets (Pébay 2008, eqs. 2.1-2.3)."""
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    n = a.n + b.n
    return MomentState(n, *pairwise_moments(a, b, n))


class Moments:
    """Streaming count, mean, variance, skewness and excess kurtosis of a stream of scores.

    O(1) memory. ``update`` takes any array of values; ``merge`` combines two disjoint streams exactly.
    Variance, skewness and kurtosis use biased (population) moments, as ``scipy.stats.kurtosis`` does by
    default, because that is what the paper's GWA uses.

    Example:
        >>> import numpy as np
        >>> m = Moments()
        >>> m.update(np.array([0.1, 0.2])); m.update(np.array([0.3, 0.4]))
        >>> round(m.mean, 6), round(m.variance, 6), round(m.excess_kurtosis, 6)
        (0.25, 0.0125, -1.36)
    """

    __slots__ = ("_state",)

    def __init__(self, state: MomentState | None = None):
        if state is not None and len(state) != len(MomentState._fields):
            raise TypeError(
                f"Expected `state` to be a MomentState ({', '.join(MomentState._fields)}); got "
                f"{len(state)} value(s). To restore a state_dict, use Moments.from_state_dict."
            )
        self._state = EMPTY if state is None else MomentState(*map(float, state))

    @classmethod
    def from_values(cls, values) -> Moments:
        """Moments of one batch of values (NaN/Inf rejected, as in :meth:`update`)."""
        moments = cls()
        moments.update(values)
        return moments

    def update(self, values) -> None:
        """Add a batch of values (any shape; NaN is rejected rather than silently poisoning the moments)."""
        arr = np.asarray(values)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"Expected `values` to be real numbers in Moments.update; got {describe(arr)}.")
        finite = np.isfinite(arr)
        if not finite.all():
            raise ValueError(
                f"Expected finite `values` in Moments.update; got NaN/Inf "
                f"({arr.size - int(finite.sum())} value(s))."
            )
        state = batch_state(arr)
        if not (math.isfinite(state.mean) and math.isfinite(state.m4)):
            raise ValueError(
                f"Moments.update: the fourth central moment of these finite values overflows float64 "
                f"(largest |value| {float(np.max(np.abs(arr))):.3g}); scale the values down."
            )
        self._state = merge_states(self._state, state)

    def merge(self, other: Moments) -> Moments:
        """Return the moments of the union of two disjoint streams (neither input is changed)."""
        if not isinstance(other, Moments):
            raise TypeError(f"Expected `other` to be a gwa.Moments; got {type(other).__name__}.")
        return Moments(merge_states(self._state, other._state))

    @property
    def state(self) -> MomentState:
        return self._state

    @property
    def n(self) -> int:
        return int(self._state.n)

    @property
    def mean(self) -> float:
        return self._state.mean if self._state.n else math.nan

    @property
    def variance(self) -> float:
        """Biased (population) variance ``M2 / n``."""
        return self._state.m2 / self._state.n if self._state.n else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self._state.n else math.nan

    @property
    def skewness(self) -> float:
        s = self._state
        if s.n == 0 or s.m2 <= 0:
            return math.nan
        return math.sqrt(s.n) * s.m3 / s.m2**1.5

    @property
    def excess_kurtosis(self) -> float:
        """Fisher excess kurtosis from biased moments, ``n M4 / M2^2 - 3``; NaN for constant or empty data."""
        s = self._state
        if s.n == 0 or s.m2 <= 0:
            return math.nan
        return s.n * s.m4 / (s.m2 * s.m2) - 3.0

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, **self._state._asdict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Moments:
        """Restore :meth:`state_dict` (a state without ``format`` is read as format 1).

        Raises:
            ValueError: for another format, a missing field, a non-finite or non-numeric field, a count that
                is negative or fractional, a negative ``m2``, or an empty state with non-zero moments.
        """
        return cls(check_state(state, "state"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Moments) and self._state == other._state

    def __repr__(self) -> str:
        return (
            f"Moments(n={self.n}, mean={self.mean:.6g}, std={self.std:.6g}, "
            f"excess_kurtosis={self.excess_kurtosis:.6g})"
        )
