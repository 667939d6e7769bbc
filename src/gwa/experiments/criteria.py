"""Stop criteria: which epoch each rule picks from a run's per-epoch metric rows (``metrics.jsonl``).

Every criterion maps the rows (keys of :mod:`gwa.rundir`) to one 1-based epoch:

============== ==========================================================================================
``gwa_paper``   the paper verbatim: :func:`gwa.select_epoch` (``"paper"``: skip the first 10%, argmax; or
                ``"finetune"``) on the raw GWA, pole values included (only non-finite ones, stored as null,
                can never be picked)
``gwa``         gwa's default (:data:`DEFAULT`): the same rule on mean alignment / Pearson kurtosis
                (excess + 3 >= 1, no pole); see :func:`gwa_default`
``align_mean``  the same rule on the mean alignment (the paper's model-comparison statistic)
``val``         max accuracy on the held-out split with its noisy labels (what a user has)
``val_clean``   the same split scored against its clean labels (the paper's validation baseline)
``labelwave``   LabelWave: first local minimum of the 3-epoch moving average of prediction changes
``grad_disparity`` Gradient Disparity: its minimum, stopping after 5 epochs without a new one
``last``        the last epoch
``oracle``      max test accuracy (an upper bound no real rule can use)
============== ==========================================================================================

A criterion is present only when its inputs are in the rows and it can choose (at least one finite value where
it looks); missing keys and nulls are NaN. Ties go to the earliest epoch. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from gwa._stopping import select_epoch
from gwa.baselines import disparity, labelwave

#: The criterion gwa uses by default (the best checkpoint and summary of ``gwa train``, reports).
DEFAULT = "gwa"
#: Every criterion in the order tables show them.
NAMES = ("gwa_paper", DEFAULT, "align_mean", "val", "val_clean", "labelwave", "grad_disparity", "last", "oracle")


def series(rows: list[dict], key: str) -> np.ndarray:
    """One metric over the rows as float64, NaN where missing or null (booleans as 0/1)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)


def _has(rows: list[dict], key: str) -> bool:
    return any(r.get(key) is not None for r in rows)


def default_value(row: dict) -> float:
    """The per-epoch value :func:`gwa_default` maximises, for online stoppers: ``mean / (excess_kurtosis + 3)``
    from a metric row; NaN when either is missing."""
    mean, kurt = row.get("align_mean"), row.get("align_excess_kurtosis")
    if mean is None or kurt is None:
        return float("nan")
    return float(mean) / (float(kurt) + 3.0)


def gwa_default(rows: list[dict], *, finetune: bool = False) -> int:
    """gwa's default criterion, the paper's ratio without its pole; 0-based index into ``rows``.

    The paper's stop rule (skip the first 10%, argmax; or the fine-tuning rule) on ``mean / (excess_kurtosis + 3)``,
    the mean alignment divided by the *Pearson* kurtosis ``m4 / m2**2``, which is >= 1 for every distribution
    (``m4 >= m2**2``), where the paper's ``excess + 1.2`` crosses zero for flat or bimodal scores. It keeps the
    paper's intent (heavy tails lower the value) without the pole, and needs no constant. Label noise makes the
    scores bimodal (clean samples positive, mislabeled ones negative), excess kurtosis starts below -1.2 and
    rises through it as the mislabeled samples are memorised; the paper's ratio then jumps from -inf to +inf and
    its argmax lands in the memorisation phase (docs/benchmarks.md). Rows need ``align_mean`` and
    ``align_excess_kurtosis``.
    """
    values = series(rows, "align_mean") / (series(rows, "align_excess_kurtosis") + 3.0)
    return select_epoch(values, "finetune" if finetune else "paper")


def guarded_paper(rows: list[dict], *, finetune: bool = False) -> int:
    """The paper's rule on guard-aware GWA: NaN where the summary is flagged (``gwa_flagged``, at or past the
    kurtosis pole), so a pole is never chosen; ValueError when every epoch after the warm-up is flagged."""
    values = series(rows, "gwa")
    if _has(rows, "gwa_flagged"):
        values[series(rows, "gwa_flagged") == 1] = np.nan
    return select_epoch(values, "finetune" if finetune else "paper")


def _smoothed_mean(rows: list[dict], *, finetune: bool = False, k: int = 3) -> int:
    """The paper's rule on the trailing ``k``-epoch mean of the mean alignment."""
    values = labelwave.moving_average(series(rows, "align_mean"), k)
    return select_epoch(values, "finetune" if finetune else "paper")


def _guarded_or_mean(rows: list[dict]) -> int:
    """Guard-aware GWA; when every epoch after the warm-up is at the pole, the mean alignment instead."""
    try:
        return guarded_paper(rows)
    except ValueError:
        return select_epoch(series(rows, "align_mean"), "paper")


#: Research candidates for the default, reported by ``gwa bench`` beside the criteria above (rows only).
CANDIDATES = {
    "gwa_guarded": guarded_paper,
    "gwa_guarded_or_mean": _guarded_or_mean,
    "gwa_pearson_finetune": lambda rows: gwa_default(rows, finetune=True),
    "align_mean_finetune": lambda rows: select_epoch(series(rows, "align_mean"), "finetune"),
    "align_mean_smooth3": _smoothed_mean,
}


def _argmax(values: np.ndarray) -> int:
    if not np.isfinite(values).any():
        raise ValueError("no finite value")
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))


def select_all(rows: list[dict], *, finetune: bool = False) -> dict[str, int]:
    """The epoch (1-based, from the rows' ``epoch``) each available criterion picks.

    Args:
        rows: per-epoch metric rows in epoch order, each with ``epoch``; rows without values (e.g. epochs not yet
            run) are allowed and count toward the warm-up length.
        finetune: use the paper's fine-tuning rule (first minimum, then max) for the GWA-based criteria.

    Returns:
        ``{criterion: epoch}`` in :data:`NAMES` order, for the criteria that could choose.
    """
    if not rows:
        return {}
    epochs = [int(r["epoch"]) for r in rows]
    rule = "finetune" if finetune else "paper"
    choosers = {
        "gwa_paper": ("gwa", lambda: select_epoch(series(rows, "gwa"), rule)),
        DEFAULT: ("align_excess_kurtosis", lambda: gwa_default(rows, finetune=finetune)),
        "align_mean": ("align_mean", lambda: select_epoch(series(rows, "align_mean"), rule)),
        "val": ("val_acc", lambda: _argmax(series(rows, "val_acc"))),
        "val_clean": ("val_acc_clean", lambda: _argmax(series(rows, "val_acc_clean"))),
        "labelwave": ("prediction_changes", lambda: labelwave.select_epoch(series(rows, "prediction_changes"))),
        "grad_disparity": ("grad_disparity", lambda: disparity.select_epoch(series(rows, "grad_disparity"))),
        "last": ("epoch", lambda: len(rows) - 1),
        "oracle": ("test_acc", lambda: _argmax(series(rows, "test_acc"))),
    }
    out = {}
    for name in NAMES:
        key, choose = choosers[name]
        if not _has(rows, key):
            continue
        try:
            out[name] = epochs[choose()]
        except ValueError:  # nothing finite where the rule looks (e.g. every GWA at the pole)
            continue
    return out
