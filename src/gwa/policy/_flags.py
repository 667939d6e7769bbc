"""Flag rules: which training samples are likely mislabeled, from their per-epoch alignment.

A sample whose loss gradient points against the head's weights (alignment < 0) is one the model fits only by
memorising it; the paper finds such samples are mostly mislabeled. Each rule judges a sample on the epochs in
which it was seen (an ``(E, N)`` matrix, NaN where unseen):

- ``lastk`` (default): flagged when its alignment is below the threshold (default 0) in **each** of the last
  ``k`` (default 3) epochs in which it was seen. Score: its mean over those epochs; most negative first.
- ``mean``: flagged when its mean alignment over all epochs is below the threshold (default 0).
- ``frac``: flagged when the fraction of epochs with alignment < 0 is at least the threshold (default 0.5).
"""

from __future__ import annotations

import math

import numpy as np

from gwa._validation import check_choice

FLAG_RULES = ("lastk", "mean", "frac")
DEFAULT_FLAG_RULE = "lastk"
DEFAULT_THRESHOLDS = {"lastk": 0.0, "mean": 0.0, "frac": 0.5}
DEFAULT_LAST_K = 3


def check_flag_options(rule: str, last_k: int, threshold: float | None, top: int | None) -> float:
    """Validate a flag rule's options; return the threshold to use (the rule's default when None)."""
    check_choice("rule", rule, FLAG_RULES)
    if isinstance(last_k, bool) or not (isinstance(last_k, (int, np.integer)) and last_k >= 1):
        raise ValueError(f"Expected `last_k` to be an integer >= 1; got {last_k!r}.")
    if top is not None and threshold is not None:
        raise ValueError(
            f"Pass either `top` or `threshold`, not both; got top={top!r}, threshold={threshold!r}."
        )
    if top is not None and (isinstance(top, bool) or not (isinstance(top, (int, np.integer)) and top >= 1)):
        raise ValueError(f"Expected `top` to be an integer >= 1; got {top!r}.")
    threshold = DEFAULT_THRESHOLDS[rule] if threshold is None else float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"Expected `threshold` to be a finite number; got {threshold!r}.")
    if rule == "frac" and not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"Expected `threshold` in [0, 1] for rule 'frac' (a fraction of epochs); got {threshold!r}."
        )
    return threshold


def flag_scores(
    matrix: np.ndarray,
    *,
    rule: str = DEFAULT_FLAG_RULE,
    last_k: int = DEFAULT_LAST_K,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score and decision per sample of an ``(E, N)`` alignment matrix (NaN = unseen).

    Returns:
        ``(score, flagged, suspicion_key)``, each ``(N,)``: the rule's score, whether the threshold rule flags
        the sample, and a key that sorts the most suspicious first (NaN for samples never seen).

    Example:
        >>> import numpy as np
        >>> m = np.array([[0.2, -0.1, np.nan], [-0.3, -0.2, np.nan], [-0.1, -0.4, np.nan]])
        >>> score, flagged, _ = flag_scores(m, last_k=2)
        >>> score.round(2).tolist(), flagged.tolist()
        ([-0.2, -0.3, nan], [True, True, False])
    """
    threshold = check_flag_options(rule, last_k, threshold, None)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Expected `matrix` of shape (epochs, samples); got shape={matrix.shape}.")
    seen = np.isfinite(matrix)
    values = np.where(seen, matrix, 0.0)
    n_seen = seen.sum(axis=0)
    ok = n_seen > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "lastk":
            # Seen entries counted from the end: an entry is among a sample's last k seen epochs iff <= k.
            from_end = np.cumsum(seen[::-1], axis=0)[::-1]
            window = seen & (from_end <= last_k)
            size = window.sum(axis=0)
            score = np.where(ok, np.where(window, values, 0.0).sum(axis=0) / size, np.nan)
            return score, ok & ((window & (values < threshold)).sum(axis=0) == size), score
        if rule == "mean":
            mean_all = np.where(ok, values.sum(axis=0) / n_seen, np.nan)
            return mean_all, ok & (mean_all < threshold), mean_all
        frac = np.where(ok, (seen & (values < 0)).sum(axis=0) / n_seen, np.nan)
        return frac, ok & (frac >= threshold), -frac
