"""The epochs past the early transient, and gwa's default rule restricted to them.

Short runs can start with a transient in which the alignment peaks before the model has learned the data (the
digits CNN of the development grid, the class-pair-noise CNNs of the held-out grid). An epoch counts as past it
when its training accuracy is within :data:`TRANSIENT_ACC_GAP` of what the model fits: the run's maximum training
accuracy, capped at 1 - the estimated noise rate (a noisy run's plateau before memorisation). The ``early_transient``
diagnostic flags a choice outside these epochs; the ``window`` flag rule reads the epochs up to the choice among them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gwa.policy._criteria import Entry, as_rows, choose, series, warmup_epochs
from gwa.policy._noise_rate import estimate_noise_rate

#: Training-accuracy gap below what the model fits that marks an epoch as part of the early transient.
TRANSIENT_ACC_GAP = 0.15


def past_transient(history: Sequence[Entry], alignment) -> np.ndarray:
    """``(E,)`` booleans: epochs whose training accuracy is within :data:`TRANSIENT_ACC_GAP` of what the model
    fits. Epochs without a logged ``train_acc`` are not excluded (nothing is known against them)."""
    rows = as_rows(history)
    acc = series(rows, "train_acc")
    if not np.isfinite(acc).any():
        return np.ones(len(rows), dtype=bool)
    reachable = min(float(np.nanmax(acc)), 1.0 - estimate_noise_rate(alignment).rate)
    return ~np.isfinite(acc) | (acc >= reachable - TRANSIENT_ACC_GAP)


def after_transient_epoch(history: Sequence[Entry], alignment, *, total_epochs: int | None = None) -> int:
    """gwa's default rule (warm-up, then the argmax of ``gwa``) over the epochs :func:`past_transient` keeps;
    the chosen epoch, 1-based like :func:`gwa.select_epoch`.

    Args:
        history: the run's epochs (:class:`gwa.EpochSummary` or metric rows with ``gwa`` and ``train_acc``).
        alignment: the run's ``(E, N)`` per-sample alignment (NaN = unseen), for the estimated noise rate.
        total_epochs: the planned number of epochs, which fixes the warm-up (default: the history's length).

    Raises:
        ValueError: when no epoch past the warm-up and the transient has a finite ``gwa``.

    Example:
        >>> import numpy as np
        >>> rows = [{"gwa": g, "train_acc": a} for g, a in zip([.01, .05, .09, .06, .04, .03, .035, .03, .03, .03],
        ...                                                    [.2, .4, .5, .7, .8, .9, .95, .97, .98, .99])]
        >>> after_transient_epoch(rows, np.full((10, 100), 0.05))  # the peak at epoch 3 is in the transient
        7
    """
    rows = as_rows(history)
    values = series(rows, "gwa")
    values[~past_transient(rows, alignment)] = np.nan
    return choose(values, warmup=warmup_epochs(total_epochs or len(rows))) + 1
