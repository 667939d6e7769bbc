"""Flag rules: which training samples are likely mislabeled, from their per-epoch alignment.

A sample whose loss gradient points against the head's weights (alignment < 0) is one the model fits only by
memorising it; the paper finds such samples are mostly mislabeled. Each rule judges a sample on the epochs in
which it was seen (an ``(E, N)`` matrix, NaN where unseen):

- ``window`` (default): flagged when its mean alignment over the *window* is below the threshold (default 0): the
  epochs after the warm-up through the epoch gwa's default rule chooses among those past the early transient
  (:func:`flag_window`; needs the run's history). Score: that mean; most negative first. Flipped samples are
  negatively aligned until the model memorises them, so the window leaves the memorised epochs of a run that
  overfits out (chosen on the held-out grid H'; docs/results.md).
- ``lastk``: flagged when its alignment is below the threshold (default 0) in **each** of the last ``k`` (default 3)
  epochs in which it was seen. Score: its mean over those epochs; most negative first.
- ``mean``: flagged when its mean alignment over all epochs is below the threshold (default 0).
- ``frac``: flagged when the fraction of epochs with alignment < 0 is at least the threshold (default 0.5).
- ``pair_aware``: ``window`` read with the run's noise map (:class:`gwa.policy.NoiseMap`). A sample whose given
  label ``c`` and majority prediction ``k`` over the window form a swapped pair of the map (``[c, k, rate]``) is
  scored by its window mean minus ``PAIR_SLACK`` times class ``c``'s alignment scale (the mean of its positive
  window means): under class-pair noise a flipped sample's mean sits just above 0 once the model starts to fit
  it, so a mildly positive mean in a swapped cell counts as suspicious. Flagged when that score is below the
  threshold (default 0); elsewhere (and for a map that abstains or names no pair) it equals ``window``.
  Developed on 45 runs (``experiments/noise_map_flags.py``; in-sample, docs/noise-map.md).

:func:`choose_flag_rule` picks ``pair_aware`` where the map shows concentrated pair structure (the
``class_conditional`` situation), else ``window``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gwa._validation import check_choice
from gwa.policy._criteria import Entry, as_rows, warmup_epochs
from gwa.policy._noise_map import NoiseMap, has_flag_pairs, is_ambiguous
from gwa.policy._transient import after_transient_epoch

FLAG_RULES = ("window", "lastk", "mean", "frac", "pair_aware")
DEFAULT_FLAG_RULE = "window"
DEFAULT_THRESHOLDS = {"window": 0.0, "lastk": 0.0, "mean": 0.0, "frac": 0.5, "pair_aware": 0.0}
DEFAULT_LAST_K = 3
#: ``pair_aware``'s slack in a swapped-pair cell, in units of the class's alignment scale (tried 0.25 / 0.5 / 1.0
#: on the 45 development runs of ``experiments/noise_map_flags.py``: in-sample).
PAIR_SLACK = 0.5


def choose_flag_rule(noise_map: NoiseMap | None) -> tuple[str, str]:
    """The flag rule gwa uses for a run and why: ``pair_aware`` where the run's noise map is reliable and shows
    concentrated pair structure (what the ``class_conditional`` diagnostic fires on), else ``window``.

    Example:
        >>> choose_flag_rule(None)[0]
        'window'
    """
    if noise_map is None:
        return DEFAULT_FLAG_RULE, "the run has no per-class evidence (no noise map)"
    if not (noise_map.reliable or is_ambiguous(noise_map)):
        return DEFAULT_FLAG_RULE, f"the run's noise map abstains ({noise_map.reason})"
    if not has_flag_pairs(noise_map):
        return DEFAULT_FLAG_RULE, (
            "the run's noise map shows no concentrated class-pair structure"
            if noise_map.pairs
            else "the run's noise map names no swapped class pair"
        )
    shown = ", ".join(f"{g}->{t} {r:.0%}" for g, t, r in noise_map.pairs[:4])
    more = f" and {len(noise_map.pairs) - 4} more" if len(noise_map.pairs) > 4 else ""
    return (
        "pair_aware",
        f"the run's noise map reports swapped class pairs (given->likely true: {shown}{more})",
    )


def pair_slack(window_mean: np.ndarray, labels, predictions, noise_map: NoiseMap | None) -> np.ndarray:
    """``(N,)`` the ``pair_aware`` rule's slack per sample: ``PAIR_SLACK`` times its given class's alignment scale
    in a swapped-pair cell of the map (given label, majority prediction over the window), 0 elsewhere.

    Args:
        window_mean: ``(N,)`` each sample's mean alignment over the window (NaN = unseen).
        labels: ``(N,)`` the given labels.
        predictions: ``(W, N)`` the predicted class per epoch of the window (NaN = unseen).
        noise_map: the run's map; no slack when None, abstaining or without pairs.
    """
    n = window_mean.size
    if noise_map is None or not (noise_map.reliable or is_ambiguous(noise_map)) or not noise_map.pairs:
        return np.zeros(n)
    c = noise_map.num_classes
    y = np.asarray(labels)
    pred = np.asarray(predictions, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"Expected `labels` of shape ({n},), one per sample; got shape={y.shape}.")
    if pred.ndim != 2 or pred.shape[1] != n:
        raise ValueError(f"Expected `predictions` of shape (epochs, {n}); got shape={pred.shape}.")
    y = y.astype(np.int64)
    votes = np.zeros((n, c + 1))  # column c: unseen or a prediction outside the map's classes
    seen = np.isfinite(pred)
    k = np.where(seen, pred, c).astype(np.int64)
    k = np.where((k >= 0) & (k < c), k, c)
    cols = np.broadcast_to(np.arange(n), k.shape)
    np.add.at(votes, (cols[seen], k[seen]), 1.0)
    majority = np.where(votes[:, :c].sum(axis=1) > 0, votes[:, :c].argmax(axis=1), -1)  # ties: lowest class
    in_pair = np.zeros(n, dtype=bool)
    for given, likely_true, _ in noise_map.pairs:
        in_pair |= (y == given) & (majority == likely_true)
    scale = np.ones(n)
    positive = np.isfinite(window_mean) & (window_mean > 0)
    for cls in np.unique(y[in_pair]):
        members = positive & (y == cls)
        if members.any():
            scale[y == cls] = float(window_mean[members].mean())
    return np.where(in_pair, PAIR_SLACK * scale, 0.0)


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
    labels=None,
    predictions=None,
    noise_map: NoiseMap | None = None,
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
        labels: ``(N,)`` the given labels (``pair_aware`` only).
        predictions: ``(E, N)`` the predicted class per epoch, NaN where unseen (``pair_aware`` only).
        noise_map: the run's :class:`NoiseMap` (``pair_aware`` only; None: the rule equals ``window``).

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
    if rule in ("window", "pair_aware"):
        if history is None:
            raise ValueError(
                f"Rule {rule!r} needs `history` (the run's metric rows, one per epoch of `matrix`) to find its "
                "window; got None."
            )
        if len(history) != matrix.shape[0]:
            raise ValueError(
                f"Expected `history` with one entry per row of `matrix` ({matrix.shape[0]}); got {len(history)}."
            )
        first, last = flag_window(history, matrix, total_epochs=total_epochs)
        matrix = matrix[first - 1 : last]
        if rule == "pair_aware" and noise_map is not None:
            if labels is None or predictions is None:
                raise ValueError(
                    "Rule 'pair_aware' with a noise map needs `labels` and `predictions` (the predicted class "
                    f"per epoch); got labels={'None' if labels is None else 'given'}, "
                    f"predictions={'None' if predictions is None else 'given'}."
                )
            predictions = np.asarray(predictions, dtype=np.float64)
            if predictions.shape != (len(history), matrix.shape[1]):
                raise ValueError(
                    f"Expected `predictions` of shape {(len(history), matrix.shape[1])}, like `matrix`; got "
                    f"shape={predictions.shape}."
                )
            predictions = predictions[first - 1 : last]
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
        if rule in ("mean", "window", "pair_aware"):
            mean_all = np.where(ok, values.sum(axis=0) / n_seen, np.nan)
            if rule == "pair_aware":
                mean_all = mean_all - pair_slack(mean_all, labels, predictions, noise_map)
            return mean_all, ok & (mean_all < threshold), mean_all
        frac = np.where(ok, (seen & (values < 0)).sum(axis=0) / n_seen, np.nan)
        return frac, ok & (frac >= threshold), -frac
