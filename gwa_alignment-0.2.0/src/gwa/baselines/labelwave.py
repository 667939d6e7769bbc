"""LabelWave (Yuan, Feng, Liu, "Early Stopping Against Label Noise Without Validation Data", ICLR 2024).

Signal: the *prediction changes* (PC) between consecutive epochs, i.e. how many training samples' argmax
prediction differs from the previous epoch's (taken, as in the official code, from the training forward passes).
The paper's stop point is the first local minimum of PC smoothed by a moving average over ``k`` epochs: the
fluctuation of predictions is lowest just before the model starts fitting the mislabeled samples.

Choices the paper leaves open, fixed here:

- ``k = 3`` (:data:`DEFAULT_WINDOW`), a *trailing* window (the mean of epochs ``e-k+1 .. e``), so that the rule
  is computable online at epoch ``e``. The smoothed value exists from the ``k``-th defined PC on.
- First local minimum: the first epoch after which the smoothed PC rises strictly; on a flat stretch followed by a
  rise, the *first* epoch of the stretch (the earliest checkpoint with that value). A curve that never rises gives
  its last epoch. The returned epoch is the one whose smoothed PC is minimal (not shifted back by the window).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

DEFAULT_WINDOW = 3


def prediction_changes(previous, current) -> int:
    """Number of samples whose prediction differs between two epochs.

    Args:
        previous, current: ``(N,)`` predicted class per sample id (float arrays may hold NaN for samples not seen
            in that epoch; those are left out).

    Returns:
        The count of samples seen in both epochs whose predictions differ.
    """
    a, b = np.asarray(previous), np.asarray(current)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"Expected `previous` and `current` of the same shape (N,); got {a.shape} and {b.shape}."
        )
    both = np.ones(a.shape, dtype=bool)
    if np.issubdtype(a.dtype, np.floating):
        both &= np.isfinite(a)
    if np.issubdtype(b.dtype, np.floating):
        both &= np.isfinite(b)
    return int((a[both] != b[both]).sum())


def prediction_change_curve(predictions) -> np.ndarray:
    """PC per epoch from an ``(E, N)`` matrix of per-epoch predictions; entry 0 is NaN (no previous epoch)."""
    p = np.asarray(predictions)
    if p.ndim != 2:
        raise ValueError(f"Expected `predictions` of shape (E, N); got shape={p.shape}.")
    out = np.full(p.shape[0], np.nan)
    for e in range(1, p.shape[0]):
        out[e] = prediction_changes(p[e - 1], p[e])
    return out


def moving_average(values: npt.ArrayLike, k: int = DEFAULT_WINDOW) -> np.ndarray:
    """Trailing mean over ``k`` entries; NaN until ``k`` consecutive finite values are available.

    Args:
        values: ``(E,)`` per-epoch values, NaN where undefined (epoch 1's PC).
        k: window length (>= 1).

    Returns:
        ``(E,)`` float64: ``out[e] = mean(values[e-k+1 : e+1])`` when all of those are finite, else NaN.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Expected `k` to be an integer >= 1; got {k!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"Expected `values` of shape (E,); got shape={v.shape}.")
    out = np.full(v.shape, np.nan)
    for e in range(k - 1, v.size):
        window = v[e - k + 1 : e + 1]
        if np.isfinite(window).all():
            out[e] = window.mean()
    return out


def first_local_minimum(values: npt.ArrayLike) -> int:
    """0-based index of the first local minimum of a curve, ignoring NaN entries (see the module's rules).

    Raises:
        ValueError: when no entry is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(v))
    if idx.size == 0:
        raise ValueError(f"Expected at least one finite value in `values`; got {v.tolist()}.")
    start = idx[0]  # first epoch of the current flat stretch
    for a, b in itertools.pairwise(idx):
        if v[b] > v[a]:
            return int(start)
        if v[b] < v[a]:
            start = b
    return int(start)


def select_epoch(prediction_changes_per_epoch: npt.ArrayLike, k: int = DEFAULT_WINDOW) -> int:
    """LabelWave's stop point: the first local minimum of the ``k``-epoch moving average of PC.

    Args:
        prediction_changes_per_epoch: ``(E,)`` PC per epoch, NaN where undefined (at least epoch 1).
        k: moving-average window.

    Returns:
        0-based index of the chosen epoch.

    Raises:
        ValueError: when fewer than ``k`` consecutive PC values are finite.

    Example:
        >>> select_epoch([np.nan, 90, 60, 40, 35, 38, 50, 70], k=1)
        4
    """
    smoothed = moving_average(prediction_changes_per_epoch, k)
    if not np.isfinite(smoothed).any():
        raise ValueError(
            f"Expected at least {k} consecutive finite prediction-change values for a {k}-epoch "
            f"moving average; got {np.asarray(prediction_changes_per_epoch, dtype=float).tolist()}."
        )
    return first_local_minimum(smoothed)
