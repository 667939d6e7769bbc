"""Stop criteria: which epoch each rule picks from a run's history, and the warm-up they share.

A *history* is the sequence of a run's epochs, each an :class:`gwa.EpochSummary` or a metric row of the run
directory (a dict with the keys of :meth:`gwa.EpochSummary.metrics` plus any of ``val_acc``, ``test_acc``,
``prediction_changes``, ...). Every criterion is a pure function of it. Epochs a user sees are 1-based.

============== ==========================================================================================
``gwa``         gwa's default: skip the warm-up (the first 10% of the planned epochs), then the epoch with the
                highest :attr:`gwa.EpochSummary.gwa` = mean / (excess kurtosis + 3) (pole-free)
``gwa_paper``   the paper verbatim: the same rule on the paper's GWA (Eq. 2), pole values included
``align_mean``  the same rule on the mean alignment (the paper's model-comparison statistic)
``val``         max accuracy on a held-out split with its noisy labels (what a user has)
``val_clean``   the same split scored against its clean labels (the paper's validation baseline)
``labelwave``   LabelWave: first local minimum of the 3-epoch moving average of prediction changes
``grad_disparity`` Gradient Disparity: its minimum, stopping after 5 epochs without a new one
``last``        the last epoch
``oracle``      max test accuracy (an upper bound no real rule can use)
============== ==========================================================================================

With ``finetune=True`` the alignment criteria use the paper's fine-tuning rule instead: after the warm-up, find
the first local minimum, then take the maximum from there on. NaN values are never chosen; ties go to the
earliest epoch. A criterion is available only when its key is in the history and it can choose.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from gwa._summary import EpochSummary
from gwa.baselines import disparity, labelwave

#: The paper skips the first 10% of training before choosing by alignment.
WARMUP_FRACTION = 0.1
#: The criterion gwa chooses by (``gwa train``'s best checkpoint, the callbacks, the report).
DEFAULT_CRITERION = "gwa"

Entry = Union[EpochSummary, Mapping[str, Any]]  # noqa: UP007 - a runtime alias, Python 3.10


def warmup_epochs(total_epochs: int) -> int:
    """Epochs at the start that no alignment criterion can choose: ``floor(0.1 * total_epochs)``.

    Example:
        >>> warmup_epochs(40), warmup_epochs(9), warmup_epochs(90)
        (4, 0, 9)
    """
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, (int, np.integer)) or total_epochs < 0:
        raise ValueError(f"Expected `total_epochs` to be an integer >= 0; got {total_epochs!r}.")
    # The epsilon keeps decimal fractions exact: 0.1 * 90 must give 9, not 8.999...
    return math.floor(WARMUP_FRACTION * int(total_epochs) + 1e-9)


def monitor_value(value: float, *, epoch: int, total_epochs: int | None) -> float:
    """An epoch's value as loggers see it: NaN in the warm-up, which no alignment criterion chooses.

    So a trainer's own monitor on it (Lightning's ``ModelCheckpoint(monitor="gwa", mode="max")``, Hugging Face's
    ``metric_for_best_model="gwa"``) keeps the epoch gwa's criterion chooses. Without ``total_epochs`` the
    warm-up is that of the epochs so far.

    Example:
        >>> monitor_value(0.3, epoch=2, total_epochs=20), monitor_value(0.3, epoch=3, total_epochs=20)
        (nan, 0.3)
    """
    return math.nan if epoch <= warmup_epochs(total_epochs or epoch) else float(value)


def as_rows(history: Sequence[Entry]) -> list[dict]:
    """The history as metric rows, each with a 1-based ``epoch`` (its position when the entry has none)."""
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(
            f"Expected `history` to be a sequence of EpochSummary or metric rows; got "
            f"{type(history).__name__}."
        )
    rows = []
    for i, entry in enumerate(history):
        if isinstance(entry, EpochSummary):
            row = {"epoch": i + 1, **entry.metrics()}
        elif isinstance(entry, Mapping):
            row = {"epoch": i + 1, **entry}
        else:
            raise TypeError(
                f"Expected `history[{i}]` to be an EpochSummary or a metric row (dict); got "
                f"{type(entry).__name__}."
            )
        rows.append(row)
    return rows


def series(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """One metric over the rows as float64, NaN where missing or null (booleans as 0/1)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)


def choose(values: npt.ArrayLike, *, warmup: int = 0, finetune: bool = False) -> int:
    """The paper's stop rule on one per-epoch curve; a 0-based index into ``values``.

    Skip the first ``warmup`` entries, then the argmax; with ``finetune``, the argmax from the first local
    minimum on (the first finite value whose next finite value is not lower). NaN is never chosen; ties go to
    the earliest entry.

    Raises:
        ValueError: when no finite value lies after the warm-up.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"Expected `values` to be 1-D; got shape={v.shape}.")
    start = int(warmup)
    if finetune:
        start = _first_local_minimum(v, start)
    window = v[start:]
    finite = np.isfinite(window)
    if not finite.any():
        raise ValueError(
            f"Expected at least one finite value after the warm-up (from epoch {start + 1}); "
            f"got {window.tolist()}."
        )
    return start + int(np.argmax(np.where(finite, window, -np.inf)))


def _first_local_minimum(v: np.ndarray, start: int) -> int:
    idx = [i for i in range(start, v.size) if np.isfinite(v[i])]
    for a, b in itertools.pairwise(idx):
        if v[b] >= v[a]:
            return a
    return idx[-1] if idx else start


def _argmax(values: np.ndarray) -> int:
    if not np.isfinite(values).any():
        raise ValueError("no finite value")
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))


Picker = Callable[[list, int, bool], int]


@dataclass(frozen=True)
class Criterion:
    """A stop criterion: the row key it needs, whether it is one per-epoch value ranked by the paper's rule
    (then an :class:`gwa.EarlyStopper` can follow it online), and how it picks (0-based)."""

    name: str
    key: str
    description: str
    pick: Picker
    per_epoch_value: bool = False


def _alignment_criterion(name: str, key: str, description: str) -> Criterion:
    return Criterion(
        name,
        key,
        description,
        lambda rows, warmup, finetune: choose(series(rows, key), warmup=warmup, finetune=finetune),
        per_epoch_value=True,
    )


#: Every criterion, in the order tables show them.
CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        _alignment_criterion("gwa_paper", "gwa_paper", "GWA, paper's rule (Eq. 2 verbatim, pole included)"),
        _alignment_criterion(DEFAULT_CRITERION, "gwa", "GWA, gwa's default (mean / Pearson kurtosis)"),
        _alignment_criterion("align_mean", "align_mean", "mean alignment, paper's rule"),
        Criterion(
            "val",
            "val_acc",
            "validation split (noisy labels)",
            lambda rows, w, f: _argmax(series(rows, "val_acc")),
        ),
        Criterion(
            "val_clean",
            "val_acc_clean",
            "validation split (clean labels)",
            lambda rows, w, f: _argmax(series(rows, "val_acc_clean")),
        ),
        Criterion(
            "labelwave",
            "prediction_changes",
            "LabelWave",
            lambda rows, w, f: labelwave.select_epoch(series(rows, "prediction_changes")),
        ),
        Criterion(
            "grad_disparity",
            "grad_disparity",
            "Gradient Disparity",
            lambda rows, w, f: disparity.select_epoch(series(rows, "grad_disparity")),
        ),
        Criterion("last", "epoch", "last epoch", lambda rows, w, f: len(rows) - 1),
        Criterion(
            "oracle",
            "test_acc",
            "best test epoch (oracle)",
            lambda rows, w, f: _argmax(series(rows, "test_acc")),
        ),
    )
}
#: The criteria an online :class:`gwa.EarlyStopper` (and so the callbacks) can follow.
MONITORABLE = tuple(name for name, c in CRITERIA.items() if c.per_epoch_value)


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"Expected `criterion` to be one of {list(CRITERIA)}; got {name!r}.")
    return CRITERIA[name]


def _total(rows: list, total_epochs: int | None) -> int:
    if total_epochs is None:
        return len(rows)
    if (
        isinstance(total_epochs, bool)
        or not isinstance(total_epochs, (int, np.integer))
        or total_epochs < len(rows)
    ):
        raise ValueError(
            f"Expected `total_epochs` to be an integer >= the {len(rows)} epochs in the history; got "
            f"{total_epochs!r}."
        )
    return int(total_epochs)


def select_epoch(
    history: Sequence[Entry] | Sequence[float] | np.ndarray,
    criterion: str = DEFAULT_CRITERION,
    *,
    finetune: bool = False,
    total_epochs: int | None = None,
) -> int:
    """The epoch (1-based) a criterion picks from a finished (or partial) history.

    Args:
        history: the run's epochs as :class:`gwa.EpochSummary` objects or metric rows; or the per-epoch values
            of an alignment criterion as plain numbers (then ``criterion`` only says which rule family).
        criterion: a name of :data:`CRITERIA`; default ``"gwa"``.
        finetune: the paper's fine-tuning rule (first minimum, then the maximum) for alignment criteria.
        total_epochs: the planned number of epochs, which fixes the warm-up (default: the history's length).
            Pass it for a run that stopped early to get the same epoch as the online :class:`gwa.EarlyStopper`.

    Raises:
        ValueError: for an unknown criterion, or when it cannot choose (its key is missing, or no finite value
            after the warm-up).

    Example:
        >>> import numpy as np, gwa
        >>> rng = np.random.default_rng(0)
        >>> history = [gwa.summarize(rng.normal(m, 0.2, 500)) for m in (0.5, 0.1, 0.3, 0.25)]
        >>> gwa.select_epoch(history)   # epoch 1 lies in no warm-up of a 4-epoch run, but has the highest gwa
        1
        >>> gwa.select_epoch(history, total_epochs=20)   # of 20 planned epochs, the first 2 are warm-up
        3
    """
    crit = get_criterion(criterion)
    if len(history) and not isinstance(history[0], (EpochSummary, Mapping)):
        if not crit.per_epoch_value:
            raise ValueError(
                f"Plain values need a per-epoch-value criterion ({', '.join(MONITORABLE)}); got "
                f"{criterion!r}."
            )
        values = np.asarray(history, dtype=np.float64)
        warmup = warmup_epochs(_total(list(values), total_epochs))
        return choose(values, warmup=warmup, finetune=finetune) + 1
    rows = as_rows(history)  # type: ignore[arg-type]  # plain values were handled above
    if not rows:
        raise ValueError("Expected a non-empty `history`; got no epochs.")
    if not any(r.get(crit.key) is not None for r in rows):
        raise ValueError(f"Criterion {criterion!r} needs {crit.key!r} in the history; no epoch has it.")
    warmup = warmup_epochs(_total(rows, total_epochs))
    return int(rows[crit.pick(rows, warmup, bool(finetune))]["epoch"])


def select_all(
    history: Sequence[Entry], *, finetune: bool = False, total_epochs: int | None = None
) -> dict[str, int]:
    """``{criterion: epoch}`` (1-based) for every criterion of :data:`CRITERIA` that can choose, in order."""
    rows = as_rows(history)
    out: dict[str, int] = {}
    if not rows:
        return out
    for name in CRITERIA:
        epoch = _try_select(rows, name, finetune=finetune, total_epochs=total_epochs)
        if epoch is not None:
            out[name] = epoch
    return out


def _try_select(rows: list, name: str, *, finetune: bool, total_epochs: int | None) -> int | None:
    try:
        return select_epoch(rows, name, finetune=finetune, total_epochs=total_epochs)
    except ValueError:  # key absent, or nothing finite where the rule looks (e.g. every GWA at the pole)
        return None
