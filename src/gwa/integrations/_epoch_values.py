"""What an epoch's result gives besides its metrics row: the scalars the trainers' loggers receive (under their
``metrics.jsonl`` names), the training loss and accuracy from per-sample signals, the veto split's accuracy, and
the diagnostics as warnings at the end."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from gwa import EpochSummary, policy

#: Criteria the integrations can follow (one value per epoch): ``gwa`` (the default), ``gwa_paper``, ``align_mean``.
MONITORS = policy.MONITORABLE


#: The keys of :func:`log_values`: the names of the same numbers in ``metrics.jsonl`` (one name per metric).
LOG_KEYS = ("gwa", "gwa_paper", "gwa_paper_flagged", "align_mean", "align_std", "align_excess_kurtosis")


def log_values(summary: EpochSummary, *, epoch: int, total_epochs: int | None) -> dict[str, float]:
    """The scalars a trainer's loggers receive each epoch, under their ``metrics.jsonl`` names (:data:`LOG_KEYS`).

    ``gwa`` is the value gwa's default criterion ranks epochs by (:attr:`gwa.EpochSummary.gwa`), NaN in the warm-up
    epochs the criterion never picks: so ``ModelCheckpoint(monitor="gwa", mode="max")`` in Lightning and
    ``metric_for_best_model="gwa"`` in Hugging Face keep gwa's own choice. ``gwa_paper`` is the paper's Eq. 2
    verbatim (pole included) and ``gwa_paper_flagged`` 1.0 where its guard fired; ``align_mean``, ``align_std`` and
    ``align_excess_kurtosis`` are the moments of the epoch's per-sample alignment.
    """
    return {
        "gwa": policy.monitor_value(summary.gwa, epoch=epoch, total_epochs=total_epochs),
        "gwa_paper": float(summary.gwa_paper),
        "gwa_paper_flagged": float(summary.flagged),
        "align_mean": float(summary.mean),
        "align_std": float(summary.std),
        "align_excess_kurtosis": float(summary.excess_kurtosis),
    }


def warn_diagnostics(diagnostics, stacklevel: int = 3) -> None:
    """One ``RuntimeWarning`` per diagnostic, at the end of training (on the writing rank), pointing at the caller
    of the caller (the trainer calling a callback's hook, a loop leaving ``RunRecorder``'s ``with``)."""
    for d in diagnostics:
        warnings.warn(f"gwa: {d}", RuntimeWarning, stacklevel=stacklevel)


def signal_mean(values) -> float | None:
    """The mean of a per-sample signal over the samples seen (finite), or None when there is none."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def split_accuracy(veto: Callable, model) -> float:
    """``veto(model)`` in eval mode without gradients, the model's mode restored; checked to be in [0, 1]."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            value = float(veto(model))
    finally:
        model.train(was_training)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `veto(model)` to return an accuracy in [0, 1]; got {value!r}.")
    return value
