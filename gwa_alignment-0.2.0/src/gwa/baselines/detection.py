"""Per-sample mislabel scores from a run's per-epoch signals, and how well they rank the mislabeled samples.

Every score is oriented so that **higher = more likely mislabeled**. Inputs are ``(E, N)`` matrices of one
per-sample signal over the logged epochs (NaN where a sample was not seen), as stored in a run directory's
``scores/<signal>_NNNN.npy`` (:meth:`gwa.rundir.Run.score_matrix`):

=========================== ===================================================================================
``alignment_at``            minus the alignment at one epoch (GWA's per-sample score; negative = conflicting)
``alignment_mean``          minus its mean over epochs
``alignment_frac_negative`` the fraction of epochs with alignment < 0
``loss_mean``               the mean cross-entropy over epochs (the small-loss trick's signal)
``aum``                     minus the Area Under the Margin (Pleiss et al. 2020): the mean over epochs of the
                            assigned label's logit minus the largest other logit (:func:`margin`)
``el2n``                    EL2N (Paul et al. 2021), ``||softmax(z) - onehot(y)||_2``, at one early epoch or
                            its mean over epochs
``confidence``              minus the data-map confidence (Swayamdipta et al. 2020): the mean ``p(y | x)``
=========================== ===================================================================================

The pip package ``aum`` averages the margin over every update call (per batch seen); with one score per sample
per epoch, as here, that is the mean over epochs.
"""

from __future__ import annotations

import numpy as np


def _matrix(name: str, values) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"Expected `{name}` of shape (E, N) with E >= 1 epochs; got shape={m.shape}.")
    return m


def _nanmean(m: np.ndarray) -> np.ndarray:
    seen = np.isfinite(m)
    count = seen.sum(axis=0)
    total = np.where(seen, m, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def margin(logits, labels) -> np.ndarray:
    """AUM's margin per sample: the assigned label's logit minus the largest other logit.

    Args:
        logits: ``(N, C)`` pre-softmax outputs, ``C >= 2``.
        labels: ``(N,)`` assigned (possibly noisy) class ids.

    Returns:
        ``(N,)`` float64; negative when another class wins.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2 or y.shape != (z.shape[0],):
        raise ValueError(f"Expected `logits` (N, C>=2) and `labels` (N,); got {z.shape} and {y.shape}.")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"Expected `labels` in [0, {z.shape[1] - 1}]; got range [{y.min()}, {y.max()}].")
    rows = np.arange(z.shape[0])
    assigned = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return assigned - others.max(axis=1)


def alignment_at(alignment, epoch_index: int) -> np.ndarray:
    """Minus the alignment at one epoch (0-based row of the ``(E, N)`` matrix)."""
    m = _matrix("alignment", alignment)
    if not -m.shape[0] <= epoch_index < m.shape[0]:
        raise ValueError(f"Expected `epoch_index` in [0, {m.shape[0]}); got {epoch_index}.")
    return -m[epoch_index]


def alignment_mean(alignment) -> np.ndarray:
    """Minus the mean alignment over the epochs in which each sample was seen."""
    return -_nanmean(_matrix("alignment", alignment))


def alignment_frac_negative(alignment) -> np.ndarray:
    """Fraction of the epochs a sample was seen in with alignment < 0."""
    m = _matrix("alignment", alignment)
    seen = np.isfinite(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            seen.any(axis=0), (seen & (m < 0)).sum(axis=0) / np.maximum(seen.sum(axis=0), 1), np.nan
        )


def loss_mean(loss) -> np.ndarray:
    """Mean per-sample loss over epochs."""
    return _nanmean(_matrix("loss", loss))


def aum(margins) -> np.ndarray:
    """Minus the Area Under the Margin: the mean of per-epoch margins (see :func:`margin`)."""
    return -_nanmean(_matrix("margins", margins))


def el2n(el2n_scores, epoch_index: int | None = None) -> np.ndarray:
    """EL2N at one epoch (0-based row), or its mean over epochs when ``epoch_index`` is None."""
    m = _matrix("el2n_scores", el2n_scores)
    if epoch_index is None:
        return _nanmean(m)
    if not -m.shape[0] <= epoch_index < m.shape[0]:
        raise ValueError(f"Expected `epoch_index` in [0, {m.shape[0]}); got {epoch_index}.")
    return m[epoch_index]


def confidence(p_gold) -> np.ndarray:
    """Minus the data-map confidence: the mean probability of the assigned label over epochs."""
    return -_nanmean(_matrix("p_gold", p_gold))


def early_epoch_index(num_epochs: int) -> int:
    """The "early" epoch for EL2N: the end of the first 10% of training (at least the first epoch), 0-based."""
    return max(1, round(0.1 * int(num_epochs))) - 1


def ranking_quality(scores, noise_mask) -> tuple[float, float]:
    """AUROC and AUPRC of a score against the noise mask (scikit-learn), over the samples with a finite score.

    Args:
        scores: ``(N,)`` higher = more likely mislabeled.
        noise_mask: ``(N,)`` bool, True where the label was changed.

    Returns:
        ``(auroc, auprc)``.

    Raises:
        ValueError: shapes differ, or the scored samples are all clean or all noisy (the AUC is undefined).

    Example:
        >>> auroc, auprc = ranking_quality([0.9, 0.2, 0.8, 0.1, float("nan")], [True, False, False, False, True])
        >>> round(auroc, 3), round(auprc, 3)
        (1.0, 1.0)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    mask = np.asarray(noise_mask, dtype=bool)
    if s.shape != mask.shape or s.ndim != 1:
        raise ValueError(
            f"Expected `scores` and `noise_mask` of the same shape (N,); got {s.shape} and {mask.shape}."
        )
    ok = np.isfinite(s)
    s, mask = s[ok], mask[ok]
    if mask.all() or not mask.any():
        raise ValueError(
            f"Expected both clean and mislabeled samples among the {ok.sum()} scored ones; got "
            f"{int(mask.sum())} mislabeled."
        )
    return float(roc_auc_score(mask, s)), float(average_precision_score(mask, s))


def run_scores(run, *, epoch: int | None = None) -> dict[str, np.ndarray]:
    """Every score above that the run's stored signals allow.

    Args:
        run: a :class:`gwa.rundir.Run`.
        epoch: the 1-based epoch for ``alignment_at`` (e.g. a stop criterion's choice); the last one if None.

    Returns:
        ``{name: (N,)}``; names: ``alignment_at_epoch``, ``alignment_last``, ``alignment_mean``,
        ``alignment_frac_negative``, ``loss_mean``, ``aum``, ``el2n_early``, ``el2n_mean``, ``confidence``.
    """
    epochs = run.epochs
    if not epochs:
        raise ValueError(f"Run {run.path} has no finished epoch.")
    signals = set(run.signals())
    out = {}
    if "alignment" in signals:
        a = run.score_matrix("alignment")
        if epoch is not None:
            if epoch not in epochs:
                raise ValueError(
                    f"Expected `epoch` among the run's epochs {epochs[0]}..{epochs[-1]}; got {epoch}."
                )
            out["alignment_at_epoch"] = alignment_at(a, epochs.index(epoch))
        out["alignment_last"] = alignment_at(a, -1)
        out["alignment_mean"] = alignment_mean(a)
        out["alignment_frac_negative"] = alignment_frac_negative(a)
    if "loss" in signals:
        out["loss_mean"] = loss_mean(run.score_matrix("loss"))
    if "margin" in signals:
        out["aum"] = aum(run.score_matrix("margin"))
    if "el2n" in signals:
        e = run.score_matrix("el2n")
        out["el2n_early"] = el2n(e, early_epoch_index(len(epochs)))
        out["el2n_mean"] = el2n(e)
    if "p_gold" in signals:
        out["confidence"] = confidence(run.score_matrix("p_gold"))
    return out
