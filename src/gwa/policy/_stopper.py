"""The online decision: after each epoch, the best epoch so far, whether to stop, and why.

:class:`EarlyStopper` keeps the history of one criterion's per-epoch values and recomputes the criterion's choice
(:func:`gwa.select_epoch`) after every epoch, with the warm-up of the *planned* run; so its best epoch at the end
of a run is by construction the post-hoc choice over the same history. Every training surface (``gwa train``,
the Lightning and Hugging Face callbacks, the plain-loop helper) decides through it.

With ``veto=True`` (or a tuple of candidate criteria), each :meth:`EarlyStopper.step` also takes the epoch's
accuracy on a small noisy split (``veto_accuracy=``); the epoch to keep is then the candidates' epoch with the best
split accuracy (:func:`gwa.policy.choose_with_veto`, the same answer post hoc), never a free argmax over the epochs.
The patience still follows the criterion's own best epoch. A surface that restores the kept epoch's weights must
keep a state for each epoch in :attr:`EarlyStopper.candidate_epochs` (at most one per candidate).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import numpy as np

from gwa._summary import EpochSummary
from gwa.policy._class_criteria import VETO_CANDIDATES, VETO_KEY, candidate_epochs, pick_veto
from gwa.policy._criteria import (
    DEFAULT_CRITERION,
    MONITORABLE,
    Entry,
    choose,
    get_criterion,
    monitor_value,
    warmup_epochs,
)

STATE_FORMAT = 2


class StopReason(str, Enum):
    """What the last :meth:`EarlyStopper.step` decided (Lightning's ``EarlyStopping`` reasons, for GWA)."""

    WARMUP = "warmup"  #: the epoch lies in the warm-up: recorded, never chosen
    IMPROVED = "improved"  #: the epoch is the new best
    NOT_IMPROVED = "not_improved"  #: no new best; waiting, within the patience
    UNDEFINED = "undefined"  #: the epoch's value is NaN (no scores, or constant scores)
    PATIENCE_EXHAUSTED = "patience_exhausted"  #: stop: the best epoch lies ``patience`` epochs behind
    VETO = "veto"  #: the veto split keeps another candidate's epoch than the criterion's best


class EarlyStopper:
    """Online best epoch and stop decision for one criterion; the same answer as :func:`gwa.select_epoch`.

    Args:
        criterion: ``"gwa"`` (the default), ``"gwa_paper"`` or ``"align_mean"``.
        patience: stop once the best epoch lies this many epochs behind the current one (counted after the
            warm-up); ``None`` never stops (the best epoch is still tracked).
        total_epochs: the planned number of epochs; fixes the warm-up (the first 10%). ``None``: the warm-up
            grows with the epochs seen, and the best epoch agrees with the post-hoc choice over them.
        finetune: the paper's fine-tuning rule (first minimum, then the maximum).
        veto: ``True`` for the tiny-split veto over :data:`gwa.policy.VETO_CANDIDATES` (with this stopper's
            criterion first), or a tuple of candidate criteria; then :attr:`best_epoch` is the veto's choice and
            :meth:`step` takes ``veto_accuracy``. Class-aware candidates need ``class_evidence`` in the entries
            (metric rows); those that cannot choose are skipped.

    Example:
        >>> import gwa
        >>> stopper = gwa.EarlyStopper(patience=2, total_epochs=10)
        >>> [stopper.step(v) for v in [0.9, 0.1, 0.3, 0.2, 0.25]]
        [False, False, False, False, True]
        >>> stopper.best_epoch, stopper.reason.value
        (3, 'patience_exhausted')
        >>> stopper.message
        'stop at epoch 5: no new best for 2 epochs since epoch 3 (gwa 0.3)'
    """

    def __init__(
        self,
        criterion: str = DEFAULT_CRITERION,
        *,
        patience: int | None = None,
        total_epochs: int | None = None,
        finetune: bool = False,
        veto: bool | tuple[str, ...] = False,
    ):
        get_criterion(criterion)
        if criterion not in MONITORABLE:
            raise ValueError(
                f"Expected `criterion` to be one of {list(MONITORABLE)} (one value per epoch); got "
                f"{criterion!r}."
            )
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1
        ):
            raise ValueError(f"Expected `patience` to be an integer >= 1 or None; got {patience!r}.")
        if total_epochs is not None and (
            isinstance(total_epochs, bool)
            or not isinstance(total_epochs, (int, np.integer))
            or total_epochs < 1
        ):
            raise ValueError(f"Expected `total_epochs` to be an integer >= 1 or None; got {total_epochs!r}.")
        self.criterion = criterion
        self.patience = None if patience is None else int(patience)
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.finetune = bool(finetune)
        self.veto = _veto_candidates(veto, criterion)
        self.reset()

    def reset(self) -> None:
        self.values: list[float] = []
        self.rows: list[dict] = []  # kept with a veto only: the candidates read them
        self.criterion_best: int | None = None
        self.candidate_epochs: dict[str, int] = {}
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.reason: StopReason | None = None
        self.message = "no epoch seen yet"

    # ------------------------------------------------------------------------------------------------ decision
    @property
    def epoch(self) -> int:
        """The last epoch seen (1-based; 0 before the first)."""
        return len(self.values)

    @property
    def warmup(self) -> int:
        """Epochs that can neither be chosen nor count toward the patience."""
        return warmup_epochs(self.total_epochs if self.total_epochs is not None else self.epoch)

    @property
    def best_value(self) -> float:
        return math.nan if self.best_epoch is None else self.values[self.best_epoch - 1]

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None

    def value_of(self, entry: Entry | float) -> float:
        """The criterion's value of one epoch (an :class:`gwa.EpochSummary`, a metric row or a number)."""
        if isinstance(entry, EpochSummary):
            entry = entry.metrics()
        if isinstance(entry, dict):
            value = entry.get(get_criterion(self.criterion).key)
            return math.nan if value is None else float(value)
        if isinstance(entry, (int, float, np.floating, np.integer)) and not isinstance(entry, bool):
            return float(entry)
        raise TypeError(
            f"Expected an EpochSummary, a metric row (dict) or a number; got {type(entry).__name__}."
        )

    def step(self, entry: Entry | float, *, veto_accuracy: float | None = None) -> bool:
        """Record one epoch; return True when training should stop now (and on every call after that).

        Args:
            entry: the epoch (an :class:`gwa.EpochSummary`, a metric row or the criterion's value).
            veto_accuracy: with a veto, the epoch's accuracy on the veto split (None or NaN: unknown, never kept
                by the veto unless no candidate epoch has one).
        """
        if self.veto is None and veto_accuracy is not None:
            raise ValueError(
                f"Got `veto_accuracy`={veto_accuracy!r} for a stopper without a veto; pass veto=True to use it."
            )
        if self.total_epochs is not None and self.epoch >= self.total_epochs:
            raise ValueError(
                f"EarlyStopper got epoch {self.epoch + 1} of a run planned for {self.total_epochs} "
                "epochs; pass the right `total_epochs`."
            )
        value = self.value_of(entry)
        if self.veto is not None:
            self.rows.append(self._veto_row(entry, value, veto_accuracy))
        self.values.append(value)
        epoch, name = self.epoch, self.criterion
        try:
            self.criterion_best = choose(self.values, warmup=self.warmup, finetune=self.finetune) + 1
        except ValueError:
            self.criterion_best = None
        self.best_epoch = self.criterion_best
        vetoed = self._apply_veto()
        if self.stopped_epoch is not None:
            return True
        if epoch <= self.warmup:
            self.reason = StopReason.WARMUP
            self.message = f"epoch {epoch}: warm-up (epochs 1-{self.warmup} are never chosen)"
            return False
        if vetoed:
            self.reason, self.message = StopReason.VETO, vetoed
        elif self.criterion_best == epoch:
            self.reason, self.message = StopReason.IMPROVED, f"epoch {epoch}: new best ({name} {value:.6g})"
            return False
        since = epoch - max(self.criterion_best or 0, self.warmup)
        if self.patience is not None and since >= self.patience:
            self.stopped_epoch = epoch
            self.reason = StopReason.PATIENCE_EXHAUSTED
            best = (
                "no epoch with a finite value"
                if self.criterion_best is None
                else f"since epoch {self.criterion_best} ({name} {self.values[self.criterion_best - 1]:.6g})"
            )
            kept = f"; keeps epoch {self.best_epoch} ({vetoed})" if vetoed else ""
            self.message = f"stop at epoch {epoch}: no new best for {since} epochs {best}{kept}"
            return True
        if vetoed:
            return False
        waiting = "" if self.patience is None else f", {since}/{self.patience} epochs without a new best"
        if math.isnan(value):
            self.reason = StopReason.UNDEFINED
            self.message = f"epoch {epoch}: {name} is undefined (no or constant scores){waiting}"
        else:
            self.reason = StopReason.NOT_IMPROVED
            self.message = (
                f"epoch {epoch}: best epoch {self.best_epoch} ({name} {self.best_value:.6g}){waiting}"
            )
        return False

    def _veto_row(self, entry, value: float, veto_accuracy) -> dict:
        if isinstance(entry, EpochSummary):
            row = dict(entry.metrics())
        elif isinstance(entry, dict):
            row = dict(entry)
        else:
            row = {get_criterion(self.criterion).key: value}
        if veto_accuracy is not None:
            acc = float(veto_accuracy)
            if not (math.isnan(acc) or 0.0 <= acc <= 1.0):
                raise ValueError(f"Expected `veto_accuracy` in [0, 1] (or None/NaN); got {veto_accuracy!r}.")
            row[VETO_KEY] = acc
        row["epoch"] = len(self.rows) + 1
        return row

    def _apply_veto(self) -> str:
        """With a veto, set the kept epoch and the candidates' epochs; a message when the veto overrules."""
        if self.veto is None or self.epoch <= self.warmup:
            self.candidate_epochs = {}
            return ""
        self.candidate_epochs = {
            k: v + 1 for k, v in candidate_epochs(self.rows, self.warmup, self.veto, self.finetune).items()
        }
        if not self.candidate_epochs:
            return ""
        kept, by = pick_veto(self.rows, self.warmup, self.finetune, self.veto)
        self.best_epoch = kept + 1
        if self.best_epoch == self.criterion_best:
            return ""
        acc = self.rows[kept].get(VETO_KEY)
        own = "none" if self.criterion_best is None else f"epoch {self.criterion_best}"
        return (
            f"epoch {self.epoch}: the veto split keeps epoch {self.best_epoch} ({by}'s choice, split accuracy "
            f"{acc:.1%}) over {self.criterion}'s {own}"
        )

    def logged_value(self) -> float:
        """The last epoch's value as loggers should see it: NaN in the warm-up, which the criterion never picks.

        So a trainer's own monitor on this value (Lightning's ``ModelCheckpoint(monitor="gwa", mode="max")``,
        Hugging Face's ``metric_for_best_model="gwa"``) keeps the epoch this stopper chooses.
        """
        if not self.values:
            return math.nan
        return monitor_value(self.values[-1], epoch=self.epoch, total_epochs=self.total_epochs)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "criterion": self.criterion,
            "patience": self.patience,
            "total_epochs": self.total_epochs,
            "finetune": self.finetune,
            "values": [None if math.isnan(v) else v for v in self.values],
            "stopped_epoch": self.stopped_epoch,
            "veto": None if self.veto is None else list(self.veto),
            "rows": self.rows if self.veto is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`: the stored values are replayed under this stopper's plan.

        The criterion, patience and rule must match; ``total_epochs`` may differ (a resumed run planned longer),
        and the decision is then the one the new plan gives for the same values.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"Expected an EarlyStopper state of format {STATE_FORMAT}; got format {got!r}.")
        if (state.get("veto") or None) != (None if self.veto is None else list(self.veto)):
            raise ValueError(
                f"Cannot load an EarlyStopper state with veto={state.get('veto')!r} into one with "
                f"veto={None if self.veto is None else list(self.veto)!r}."
            )
        for key in ("criterion", "patience", "finetune"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"Cannot load an EarlyStopper state with {key}={state.get(key)!r} into one with "
                    f"{key}={getattr(self, key)!r}."
                )
        values = state.get("values")
        if not isinstance(values, list) or not all(v is None or isinstance(v, (int, float)) for v in values):
            raise ValueError(
                f"Expected `values` in the EarlyStopper state to be a list of numbers or null; got "
                f"{values!r}."
            )
        if self.total_epochs is not None and len(values) > self.total_epochs:
            raise ValueError(
                f"Cannot load an EarlyStopper state of {len(values)} epochs into one planned for "
                f"{self.total_epochs} epochs."
            )
        stopped = state.get("stopped_epoch")
        if stopped is not None and not (isinstance(stopped, int) and 1 <= stopped <= len(values)):
            raise ValueError(f"Expected `stopped_epoch` in 1..{len(values)} or null; got {stopped!r}.")
        rows = state.get("rows")
        if self.veto is not None and not (
            isinstance(rows, list) and len(rows) == len(values) and all(isinstance(r, dict) for r in rows)
        ):
            raise ValueError(
                f"Expected `rows` in a veto EarlyStopper state: one metric row per value ({len(values)}); got "
                f"{rows!r:.200}."
            )
        self.reset()
        for i, v in enumerate(values):
            if self.veto is None:
                self.step(math.nan if v is None else float(v))
            else:
                row = dict(rows[i])  # type: ignore[index]
                self.step(row, veto_accuracy=row.pop(VETO_KEY, None))


def _veto_candidates(veto, criterion: str) -> tuple[str, ...] | None:
    if veto is False or veto is None:
        return None
    if veto is True:
        return (criterion, *(c for c in VETO_CANDIDATES if c != criterion))
    if isinstance(veto, str) or not isinstance(veto, (tuple, list)) or not veto:
        raise ValueError(f"Expected `veto` to be True, False or a tuple of candidate criteria; got {veto!r}.")
    for name in veto:
        get_criterion(name)
        if name == "veto":
            raise ValueError("Expected veto candidates other than 'veto' itself; got 'veto'.")
    return tuple(veto)
