"""Flag rules: which training samples are likely mislabeled, from their per-epoch alignment.

A sample whose loss gradient points against the head's weights (alignment < 0) is one the model fits only by
memorising it; the paper finds such samples are mostly mislabeled. Each rule judges a sample on the epochs in
which it was seen (an ``(E, N)`` matrix, NaN where unseen):

- ``window`` (default): flagged when its mean alignment over the *window* is below the threshold (default 0): the
  epochs after the warm-up through the epoch gwa's default rule chooses among those past the early transient
  (:func:`flag_window`; needs the run's history). Score: that mean; most negative first. Flipped samples are
  negatively aligned until the model memorises them, so the window leaves the memorised epochs of a run that
  overfits out (chosen on the held-out grid H'; docs/benchmarks.md).
- ``lastk``: flagged when its alignment is below the threshold (default 0) in **each** of the last ``k`` (default 3)
  epochs in which it was seen. Score: its mean over those epochs; most negative first.
- ``mean``: flagged when its mean alignment over all epochs is below the threshold (default 0).
- ``frac``: flagged when the fraction of epochs with alignment < 0 is at least the threshold (default 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gwa._validation import check_choice
from gwa.policy._criteria import Entry, as_rows, warmup_epochs
from gwa.policy._transient import after_transient_epoch

FLAG_RULES = ("window", "lastk", "mean", "frac")
DEFAULT_FLAG_RULE = "window"
DEFAULT_THRESHOLDS = {"window": 0.0, "lastk": 0.0, "mean": 0.0, "frac": 0.5}
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


def flag_window(history: Sequence[Entry], alignment, *, total_epochs: int | None = None) -> tuple[int, int]:
    """First and last epoch (1-based, inclusive) the ``window`` rule averages over: from the end of the warm-up
    through the epoch gwa's default rule chooses among those past the early transient
    (:func:`gwa.policy.after_transient_epoch`); through the last epoch when that rule cannot choose (no finite
    ``gwa`` there).

    Example:
        >>> import numpy as np
        >>> rows = [{"gwa": g, "train_acc": 0.9} for g in (0.9, 0.2, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2)]
        >>> flag_window(rows, np.full((10, 4), 0.1))   # warm-up: epoch 1; the default rule picks epoch 3
        (2, 3)
    """
    rows = as_rows(history)
    if not rows:
        raise ValueError("Expected a non-empty `history`; got no epochs.")
    first = (
        min(warmup_epochs(total_epochs or len(rows)), len(rows) - 1) + 1
    )  # the first epoch after the warm-up
    try:
        last = after_transient_epoch(rows, alignment, total_epochs=total_epochs)
    except ValueError:
        last = len(rows)
    return first, max(first, last)


def flag_scores(
    matrix: np.ndarray,
    *,
    rule: str = DEFAULT_FLAG_RULE,
    last_k: int = DEFAULT_LAST_K,
    threshold: float | None = None,
    history: Sequence[Entry] | None = None,
    total_epochs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score and decision per sample of an ``(E, N)`` alignment matrix (NaN = unseen).

    Args:
        matrix: the run's per-epoch, per-sample alignment.
        rule: a name of :data:`FLAG_RULES` (default ``"window"``).
        last_k: epochs the ``lastk`` rule looks at.
        threshold: the rule's threshold (default: :data:`DEFAULT_THRESHOLDS`).
        history: the run's epochs (metric rows or :class:`gwa.EpochSummary`), one per row of ``matrix``; the
            ``window`` rule needs it to find its window (:func:`flag_window`).
        total_epochs: the planned number of epochs, which fixes the warm-up (default: the history's length).

    Returns:
        ``(score, flagged, suspicion_key)``, each ``(N,)``: the rule's score, whether the threshold rule flags
        the sample, and a key that sorts the most suspicious first (NaN for samples never seen).

    Example:
        >>> import numpy as np
        >>> m = np.array([[0.2, -0.1, np.nan], [-0.3, -0.2, np.nan], [-0.1, -0.4, np.nan]])
        >>> score, flagged, _ = flag_scores(m, rule="lastk", last_k=2)
        >>> score.round(2).tolist(), flagged.tolist()
        ([-0.2, -0.3, nan], [True, True, False])
        >>> rows = [{"gwa": g, "train_acc": 0.9} for g in (0.2, 0.5, 0.3)]   # window: epochs 1-2 (no warm-up)
        >>> flag_scores(m, history=rows)[0].round(2).tolist()
        [-0.05, -0.15, nan]
    """
    threshold = check_flag_options(rule, last_k, threshold, None)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Expected `matrix` of shape (epochs, samples); got shape={matrix.shape}.")
    if rule == "window":
        if history is None:
            raise ValueError(
                "Rule 'window' needs `history` (the run's metric rows, one per epoch of `matrix`) to find its "
                "window; got None."
            )
        if len(history) != matrix.shape[0]:
            raise ValueError(
                f"Expected `history` with one entry per row of `matrix` ({matrix.shape[0]}); got {len(history)}."
            )
        first, last = flag_window(history, matrix, total_epochs=total_epochs)
        matrix = matrix[first - 1 : last]
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
        if rule in ("mean", "window"):
            mean_all = np.where(ok, values.sum(axis=0) / n_seen, np.nan)
            return mean_all, ok & (mean_all < threshold), mean_all
        frac = np.where(ok, (seen & (values < 0)).sum(axis=0) / n_seen, np.nan)
        return frac, ok & (frac >= threshold), -frac
