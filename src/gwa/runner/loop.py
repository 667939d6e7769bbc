"""What both training backends do around their steps: the epoch's batches, and everything after an epoch's
training (evaluation, the metrics row, the run directory, the stop decision).

A backend runs its own optimizer steps and hands each finished epoch to :meth:`EpochLoop.end_epoch`; so the
metrics, the stop rule and the best-checkpoint choice are written once, for torch and jax alike, and decided by
the core policy (:class:`gwa.EarlyStopper` on :data:`gwa.DEFAULT_CRITERION`).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gwa import DEFAULT_CRITERION, EarlyStopper, EpochSummary
from gwa.baselines import labelwave
from gwa.integrations._classes import ClassLog, epoch_evidence

log = logging.getLogger(__name__)

STATE_FORMAT = 1


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of sample ids: ``ceil(N / batch_size)`` near-equal batches (never a batch of 1 after
    a full one, which BatchNorm cannot train on)."""
    perm = epoch_permutation(num_samples, seed, epoch)
    return np.array_split(perm, math.ceil(num_samples / batch_size))


def progress_bar(total: int, *, desc: str, enabled: bool):
    """A tqdm bar on stderr within an epoch, off when disabled or stderr is not a terminal; it is cleared at the
    epoch's end, where :func:`epoch_line` leaves one line per epoch (in a terminal and in a log alike)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
    )


def _percent(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def epoch_line(metrics: dict, *, total_epochs: int, decision: str) -> str:
    """One line for the log about a finished epoch: its loss, accuracies, gwa and the stop decision in words."""
    epoch = int(metrics["epoch"])
    gwa = metrics.get("gwa")
    parts = [
        f"epoch {epoch:>{len(str(total_epochs))}}/{total_epochs}",
        f"loss {metrics['train_loss']:.4f}" if metrics.get("train_loss") is not None else "loss –",
        f"train acc {_percent(metrics.get('train_acc'))}",
    ]
    if metrics.get("val_acc") is not None:
        parts.append(f"val acc {_percent(metrics['val_acc'])}")
    if metrics.get("test_acc") is not None:
        parts.append(f"test acc {_percent(metrics['test_acc'])}")
    parts.append("gwa –" if gwa is None or not math.isfinite(gwa) else f"gwa {gwa:.4g}")
    parts.append(decision.removeprefix(f"epoch {epoch}: "))
    return "  ".join(parts)


@dataclass(frozen=True)
class EpochOutcome:
    """One finished epoch: its metrics row, whether it is the best so far, and whether to stop now."""

    metrics: dict
    is_best: bool
    stop: bool


class EpochLoop:
    """The after-epoch half of the training loop, shared by the torch and jax backends.

    Args:
        config: the run's :class:`gwa.runner.config.RunConfig`.
        data: the prepared data (evaluation sets, number of samples).
        writer: the run directory's writer (a :class:`gwa.runner.train.ReadOnlyWriter` on ranks > 0).
        echo: print :func:`epoch_line` to stderr after every epoch (off with ``--quiet`` and on ranks > 0).
        loggers: :mod:`gwa.integrations.loggers` receiving each epoch's values, decision and alignment histogram
            (``gwa train --tensorboard/--wandb``; the caller logs the choice and closes them).
    """

    def __init__(self, config, data, writer, *, echo: bool = False, loggers: list | None = None):
        self.config, self.data, self.writer, self.echo = config, data, writer, bool(echo)
        self.loggers = list(loggers or [])
        self.veto = getattr(config, "veto_frac", 0) > 0  # --veto-frac: the split chooses among the candidates
        self.stopper = EarlyStopper(
            DEFAULT_CRITERION,
            patience=config.early_stop,
            total_epochs=config.epochs,
            finetune=config.finetune,
            warn=False,  # gwa train prints a trust: line per diagnostic in its summary
            veto=self.veto,
        )
        self.classes = ClassLog()
        self.prev_pred: np.ndarray | None = None
        self.wall_time = 0.0

    def end_epoch(
        self,
        *,
        epoch: int,
        step: int,
        lr: float,
        train_loss: float,
        train_acc: float,
        summary: EpochSummary,
        n_duplicates: int,
        n_non_finite: int,
        pred_train: np.ndarray,
        scores: dict,
        seconds: float,
        predict: Callable[[np.ndarray], np.ndarray],
        grad_disparity: Callable[[], float] | None = None,
    ) -> EpochOutcome:
        """Evaluate, write the metrics row, per-sample scores and per-class evidence (``classes.jsonl``, from the
        epoch's alignment, labels and predictions ``pred_train``), and decide; see the module docstring."""
        data = self.data
        metrics = {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            **summary.metrics(),
        }
        if data.x_val is not None:
            pred = predict(data.x_val)
            metrics["val_acc"] = float((pred == data.y_val).mean())
            metrics["val_acc_clean"] = float((pred == data.y_val_clean).mean())
        if getattr(data, "x_veto", None) is not None:
            pred = predict(data.x_veto)
            metrics["veto_acc"] = float((pred == data.y_veto).mean())
            metrics["veto_acc_clean"] = float((pred == data.y_veto_clean).mean())
        metrics["test_acc"] = float((predict(data.x_test) == data.y_test).mean())
        for name, (xe, ye) in data.eval_sets.items():
            metrics[f"eval_{name}_acc"] = float((predict(xe) == ye).mean())
        metrics["prediction_changes"] = (
            None if self.prev_pred is None else labelwave.prediction_changes(self.prev_pred, pred_train)
        )
        self.prev_pred = np.asarray(pred_train)
        if grad_disparity is not None:
            metrics["grad_disparity"] = grad_disparity()
        metrics["n_duplicates"], metrics["n_non_finite"] = int(n_duplicates), int(n_non_finite)
        self.wall_time += seconds
        metrics["wall_time"] = self.wall_time
        self.writer.log_epoch(metrics, scores)
        evidence = epoch_evidence(scores.get("alignment"), data.y_train, pred_train, data.num_classes)
        self.classes.add(epoch, evidence, self.writer)
        stop = self.stopper.step(
            self.classes.stopper_row(metrics, evidence),
            veto_accuracy=metrics.get("veto_acc") if self.veto else None,
        )
        if self.loggers:
            from gwa.integrations import log_values
            from gwa.integrations.loggers import epoch_values

            values = log_values(summary, epoch=epoch, total_epochs=self.config.epochs)
            values = epoch_values(values, best_epoch=self.stopper.best_epoch, stop=stop)
            for logger in self.loggers:
                logger.log_epoch(epoch, values, alignment=scores.get("alignment"))
        if self.echo:
            print(
                epoch_line(metrics, total_epochs=self.config.epochs, decision=self.stopper.message),
                file=sys.stderr,
                flush=True,
            )
        if stop:  # a normal outcome, not a warning; the epoch line and the final summary show it
            log.info("early stop: %s", self.stopper.message)
        # best_<DEFAULT_CRITERION> stays the criterion's own epoch; the veto's epoch is in summary.json's criteria.
        best = self.stopper.criterion_best if self.veto else self.stopper.best_epoch
        return EpochOutcome(metrics, best == epoch, stop)

    def state_dict(self) -> dict:
        """JSON-safe plain values (predictions as a list, null where unseen), saved with the ``last`` checkpoint."""
        pred = (
            None
            if self.prev_pred is None
            else [None if not np.isfinite(p) else int(p) for p in np.asarray(self.prev_pred, np.float64)]
        )
        return {
            "format": STATE_FORMAT,
            "stopper": self.stopper.state_dict(),
            "wall_time": self.wall_time,
            "prev_pred": pred,
            "classes": self.classes.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"Expected an epoch-loop state of format {STATE_FORMAT}; got {state!r:.80}.")
        self.stopper.load_state_dict(state["stopper"])
        self.wall_time = float(state["wall_time"])
        if state.get("classes") is not None:  # absent in the state of a gwa before per-class evidence
            self.classes.load_state_dict(state["classes"])
        pred = state["prev_pred"]
        self.prev_pred = (
            None if pred is None else np.array([np.nan if p is None else p for p in pred], np.float64)
        )
