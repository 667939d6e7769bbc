"""What both training backends of ``gwa train`` do around their steps: the epoch's batches, the evaluation after
an epoch, its line in the log, and the loop's checkpointed state.

A backend runs its own optimizer steps and hands each finished epoch to :meth:`EpochLoop.end_epoch`, which
evaluates and passes the epoch to :class:`gwa.integrations.EpochMonitor`: the metrics row, the stop rule, the run
directory's writes and the summary are the monitor's, for torch and jax alike and for every other surface, and
decided by the core policy (:class:`gwa.EarlyStopper` on :data:`gwa.DEFAULT_CRITERION`).
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
from gwa.integrations._classes import epoch_evidence

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
    """``gwa train``'s side of the after-epoch step, shared by the torch and jax backends: evaluation, the epoch
    line, the best-checkpoint mark and the loop's checkpointed state; the row, the decision, the run directory's
    writes, the loggers and the summary are :class:`gwa.integrations.EpochMonitor`'s, as for every surface.

    Args:
        config: the run's :class:`gwa.runner.config.RunConfig`.
        data: the prepared data (evaluation sets, number of samples).
        writer: the run directory's writer (a :class:`gwa.runner.train.ReadOnlyWriter` on ranks > 0).
        echo: print :func:`epoch_line` to stderr after every epoch (off with ``--quiet`` and on ranks > 0).
        loggers: :mod:`gwa.integrations.loggers` receiving each epoch's values, decision and alignment histogram,
            then the choice (``gwa train --tensorboard/--wandb``; closed by :meth:`finish`).
    """

    def __init__(self, config, data, writer, *, echo: bool = False, loggers: list | None = None):
        from gwa.integrations import EpochMonitor

        self.config, self.data, self.writer, self.echo = config, data, writer, bool(echo)
        self.veto = getattr(config, "veto_frac", 0) > 0  # --veto-frac: the split chooses among the candidates
        self.monitor = EpochMonitor(
            monitor=DEFAULT_CRITERION,
            patience=config.early_stop,
            finetune=config.finetune,
            veto=self.veto,
            loggers=loggers,
            run_config={"class_names": list(data.classes)},  # the noise map's description names them
        )
        self.monitor.start(
            max_epochs=config.epochs,
            num_samples=data.num_samples,
            write=False,
            framework=config.backend,
            writer=writer,
        )
        self.prev_pred: np.ndarray | None = None

    @property
    def stopper(self) -> EarlyStopper:
        return self.monitor.stopper

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
        """Evaluate, then hand the epoch to :meth:`gwa.integrations.EpochMonitor.record` (the metrics row,
        per-sample scores, per-class evidence from the epoch's alignment, labels and predictions ``pred_train``,
        the decision); see the module docstring."""
        data = self.data
        metrics: dict = {"step": step, "lr": lr, "train_loss": train_loss, "train_acc": train_acc}
        if data.x_val is not None:
            pred = predict(data.x_val)
            metrics["val_acc"] = float((pred == data.y_val).mean())
            metrics["val_acc_clean"] = float((pred == data.y_val_clean).mean())
            metrics["val_size"] = len(data.y_val)  # how far to trust val_acc (diagnose's split_disagrees)
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
        row, stop = self.monitor.record(
            epoch,
            summary,
            extra=metrics,
            scores=scores,
            evidence=epoch_evidence(scores.get("alignment"), data.y_train, pred_train, data.num_classes),
            n_duplicates=n_duplicates,
            n_non_finite=n_non_finite,
            seconds=seconds,
        )
        if self.echo:
            print(
                epoch_line(row, total_epochs=self.config.epochs, decision=self.stopper.message),
                file=sys.stderr,
                flush=True,
            )
        if stop:  # a normal outcome, not a warning; the epoch line and the final summary show it
            log.info("early stop: %s", self.stopper.message)
        # best_<DEFAULT_CRITERION> stays the criterion's own epoch; the veto's epoch is in summary.json's criteria.
        best = self.stopper.criterion_best if self.veto else self.stopper.best_epoch
        return EpochOutcome(row, best == epoch, stop)

    def replay(self) -> None:
        """No epoch left to train (a run resumed at its end): the decisions again from the rows and per-class
        evidence its run directory holds."""
        from gwa import ClassEvidence

        evidence = {
            int(r["epoch"]): ClassEvidence.from_dict({k: v for k, v in r.items() if k != "epoch"})
            for r in getattr(self.writer, "class_rows", [])
        }
        rows = list(getattr(self.writer, "rows", []))
        self.monitor.replay(rows, [evidence.get(int(r["epoch"])) for r in rows])

    def finish(self, extra: dict | None = None):
        """Conclude the run (:meth:`gwa.integrations.EpochMonitor.finish`): ``summary.json`` with ``extra``'s
        fields, the run marked complete, the loggers told the choice and closed. Returns the summary."""
        return self.monitor.finish(summary=extra)

    def state_dict(self) -> dict:
        """JSON-safe plain values (predictions as a list, null where unseen), saved with the ``last`` checkpoint."""
        pred = (
            None
            if self.prev_pred is None
            else [None if not np.isfinite(p) else int(p) for p in np.asarray(self.prev_pred, np.float64)]
        )
        state = self.monitor.state_dict()
        return {
            "format": STATE_FORMAT,
            "stopper": state["stopper"],
            "wall_time": state["wall"],
            "prev_pred": pred,
            "classes": state["classes"],
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume: the monitor's stopper, wall time and class log from ``state``, its rows from the run directory
        (those the writer kept: the epochs up to the checkpoint's)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"Expected an epoch-loop state of format {STATE_FORMAT}; got {state!r:.80}.")
        rows = [dict(r) for r in getattr(self.writer, "rows", [])]  # none on ranks > 0, which only decide
        classes = state.get("classes")  # absent in the state of a gwa before per-class evidence
        self.monitor.load_state_dict(
            {
                "monitor": self.monitor.monitor,
                "rows": rows,
                "stopper": state["stopper"],
                "wall": float(state["wall_time"]),
                "classes": classes if classes is not None else [None] * len(rows),
            }
        )
        pred = state["prev_pred"]
        self.prev_pred = (
            None if pred is None else np.array([np.nan if p is None else p for p in pred], np.float64)
        )
