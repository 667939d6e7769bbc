"""What every integration does once an epoch's alignment is known: metrics, stop rule, best epoch, run directory.

The trainer-specific callbacks only find logits, targets and sample ids and call :class:`GWATracker`; the
decision logic lives here once, so that Lightning, Hugging Face and a plain loop stop at the same epoch and
write the same run directory (:mod:`gwa.rundir`).

The online best epoch equals the post-hoc criterion of the same name in :mod:`gwa.experiments.criteria`
(``gwa``, the default, or ``align_mean``) once all epochs have run: both skip ``floor(0.1 * max_epochs)``
warm-up epochs, never pick a guarded (pole) GWA, and break ties toward the earliest epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from gwa._stopping import EarlyStopper
from gwa._validation import check_choice
from gwa.rundir import RunWriter, epoch_metrics

#: Values that can drive the stop rule and the best epoch.
MONITORS = ("gwa", "align_mean")
#: The warm-up fraction of the paper's rule (the first 10% of training is skipped).
WARMUP_FRAC = 0.1
#: Patience used when early stopping is off: the best epoch is still tracked.
_NEVER = 2**62


def log_values(summary) -> dict[str, float]:
    """The scalars a trainer's loggers receive each epoch (``gwa`` is the paper's value, pole included)."""
    return {"gwa": float(summary.gwa), "gwa/align_mean": float(summary.mean), "gwa/align_std": float(summary.std),
            "gwa/excess_kurtosis": float(summary.excess_kurtosis), "gwa/flagged": float(summary.flagged)}


def monitored_value(summary, monitor: str) -> float:
    """The stop rule's input: GWA with guarded epochs as NaN (never best), or the mean alignment."""
    return float(summary.gwa_or_nan) if monitor == "gwa" else float(summary.mean)


class EpochMonitor:
    """Stop rule, best epoch (and optionally its weights) and run directory, fed one epoch at a time.

    Args:
        monitor: ``"gwa"`` (guard-aware GWA, the default criterion) or ``"align_mean"``.
        patience: epochs without improvement (after the warm-up) before asking to stop; None never stops
            (the best epoch is still tracked).
        min_delta: an improvement must exceed this.
        warmup: epochs observed but never best; ``"auto"``: ``floor(0.1 * max_epochs)`` (the paper's rule).
        restore_best_weights: keep a CPU copy of the weights of the best epoch so that :meth:`finish` can load
            them into the model, whether or not training stopped early.
        run_dir: write a run directory there (needs sample ids for the per-sample scores).
        run_config: extra JSON-serialisable entries for the run's ``config.json``.
        overwrite: allow ``run_dir`` to replace another run.
        labels: optional ``(N,)`` training labels by sample id, written to ``labels.npy`` (used by ``gwa flag``).
        noise_mask: optional ``(N,)`` bool mask of known mislabeled samples, for ``gwa flag`` / ``gwa report``.
    """

    def __init__(self, *, monitor: str = "gwa", patience: int | None = None, min_delta: float = 0.0,
                 warmup: int | str = "auto", restore_best_weights: bool = False, run_dir=None,
                 run_config: dict | None = None, overwrite: bool = False, labels=None, noise_mask=None):
        check_choice("monitor", monitor, MONITORS)
        if patience is not None and not (isinstance(patience, int) and not isinstance(patience, bool)
                                         and patience >= 1):
            raise ValueError(f"Expected `patience` to be an integer >= 1 or None; got {patience!r}.")
        if warmup != "auto" and not (isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0):
            raise ValueError(f"Expected `warmup` to be 'auto' or an integer >= 0; got {warmup!r}.")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"Expected `min_delta` to be a finite number >= 0; got {min_delta!r}.")
        if run_config is not None and not isinstance(run_config, dict):
            raise TypeError(f"Expected `run_config` to be a dict; got {type(run_config).__name__}.")
        self.monitor, self.patience, self.min_delta, self.warmup = monitor, patience, float(min_delta), warmup
        self.restore_best_weights = bool(restore_best_weights)
        self.run_dir, self.run_config, self.overwrite = run_dir, dict(run_config or {}), bool(overwrite)
        self.labels, self.noise_mask = labels, noise_mask
        self.stopper: EarlyStopper | None = None
        self.rows: list[dict] = []
        self.best_state: dict | None = None
        self.writer: RunWriter | None = None
        self._pending: dict | None = None
        self._wall = 0.0
        self._t0: float | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, *, max_epochs: int | None, num_samples: int | None, write: bool, framework: str) -> None:
        """Begin (or resume) training: build the stopper, open the run directory on the writing rank."""
        warmup = self.warmup
        if warmup == "auto":
            warmup = math.floor(WARMUP_FRAC * max_epochs) if max_epochs and max_epochs > 0 else 0
        self.stopper = EarlyStopper("max", patience=self.patience or _NEVER, min_delta=self.min_delta,
                                    warmup=warmup)
        resumed = self._pending is not None
        if resumed:
            self._load_pending()
        if self.run_dir is not None and write:
            if num_samples is None:
                raise ValueError("Expected `num_samples` (the dataset size) to write `run_dir`; got None and could "
                                 "not infer it from the training dataloader's dataset.")
            config = {"framework": framework, "monitor": self.monitor, "patience": self.patience,
                      "warmup": warmup, "max_epochs": max_epochs, **self.run_config}
            self.writer = RunWriter(self.run_dir, config, num_samples, labels=self.labels,
                                    noise_mask=self.noise_mask, resume=resumed and _has_run(self.run_dir),
                                    resume_epoch=len(self.rows) if resumed else None, overwrite=self.overwrite)
        self._t0 = time.perf_counter()

    def end_epoch(self, result, *, extra: dict | None = None,
                  model_state: Callable[[], dict] | None = None) -> tuple[dict, bool]:
        """Record one :class:`gwa.torch.EpochResult`.

        Args:
            result: the tracker's epoch result.
            extra: further scalars for the metrics row (``step``, ``train_loss``, ``val_acc``, ...).
            model_state: returns the model's ``state_dict``; called when the epoch is the new best and
                ``restore_best_weights`` is on.

        Returns:
            ``(row, stop)``: the run directory's metrics row and whether the stop rule fired.
        """
        if self.stopper is None:
            raise RuntimeError("EpochMonitor.end_epoch() before start().")
        now = time.perf_counter()
        self._wall += now - (self._t0 or now)
        self._t0 = now
        summary = result.summary
        row = {"epoch": int(result.epoch), **(extra or {}), **epoch_metrics(summary),
               "n_duplicates": int(result.n_duplicates), "n_non_finite": int(result.n_non_finite),
               "wall_time": self._wall}
        stop = self.stopper.step(monitored_value(summary, self.monitor), epoch=result.epoch - 1)
        if self.stopper.best_epoch == result.epoch - 1 and self.restore_best_weights and model_state is not None:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model_state().items()}
        self.rows.append(row)
        if self.writer is not None:
            scores = None
            if result.scores is not None:
                scores = {"alignment": result.scores, **result.signals}
            self.writer.log_epoch(row, scores)
        return row, bool(stop and self.patience is not None)

    def finish(self, load_state: Callable[[dict], object] | None = None) -> None:
        """End of training: load the best weights (when kept) and close the run directory with its choices."""
        if self.best_state is not None and load_state is not None:
            load_state(self.best_state)
        if self.writer is not None:
            from gwa.experiments import criteria

            choices = criteria.select_all(self.rows) if self.rows else {}
            self.writer.write_summary({"criteria": {name: {"epoch": e} for name, e in choices.items()},
                                       "monitor": self.monitor, "best_epoch": self.best_epoch,
                                       "stopped_epoch": self.stopped_epoch})
            self.writer.finish()

    # ---------------------------------------------------------------------------------------------- results
    @property
    def best_epoch(self) -> int | None:
        """1-based epoch with the best monitored value so far (None before the warm-up ends)."""
        best = None if self.stopper is None else self.stopper.best_epoch
        return None if best is None else best + 1

    @property
    def best_value(self) -> float:
        return math.nan if self.stopper is None else self.stopper.best_value

    @property
    def stopped_epoch(self) -> int | None:
        """1-based epoch at which the stop rule fired (None if it did not, or early stopping is off)."""
        stopped = None if self.stopper is None or self.patience is None else self.stopper.stopped_epoch
        return None if stopped is None else stopped + 1

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain values (and CPU tensors for the best weights): enough to resume with the same decisions."""
        state = self._pending if self.stopper is None else {
            "stopper": self.stopper.state_dict(), "rows": [dict(r) for r in self.rows], "wall": self._wall,
            "best_state": self.best_state}
        return {"monitor": self.monitor, **(state or {})}

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") != self.monitor:
            raise ValueError(f"Expected a state with monitor={self.monitor!r}; got {state.get('monitor')!r}.")
        self._pending = dict(state) if "stopper" in state else None
        if self.stopper is not None and self._pending is not None:
            self._load_pending()

    def _load_pending(self) -> None:
        state, self._pending = self._pending, None
        self.stopper.load_state_dict(state["stopper"])
        self.rows = [dict(r) for r in state["rows"]]
        self._wall = float(state["wall"])
        self.best_state = state.get("best_state")


def _has_run(path) -> bool:
    from pathlib import Path

    return (Path(path) / "config.json").exists()


def scores_by_id(ids: np.ndarray, scores: np.ndarray, num_samples: int) -> np.ndarray:
    """Scatter ``scores`` aligned with ``ids`` into an ``(N,)`` float32 array, NaN where unseen."""
    out = np.full(num_samples, np.nan, dtype=np.float32)
    out[ids] = scores
    return out
