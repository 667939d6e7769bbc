"""What every integration does once an epoch's alignment is known: metrics, stop rule, best epoch, run directory.

The trainer-specific callbacks only find logits, targets and sample ids and call :class:`GWATracker`; the
decision logic lives here once, so that Lightning, Hugging Face and a plain loop stop at the same epoch and
write the same run directory (:mod:`gwa.rundir`).

The best epoch is, after every epoch, the choice of a criterion of :mod:`gwa.experiments.criteria` (``gwa``, the
default, ``gwa_paper`` or ``align_mean``) on the metric rows so far, padded with empty rows up to ``max_epochs``
so that the warm-up skip is the final one (the first 10% of all epochs); so the online best epoch is the
post-hoc choice of ``gwa report`` / ``gwa train`` once all epochs have run. The stop rule fires when that choice
lies ``patience`` epochs (counted after the warm-up) behind the current epoch.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

from gwa._validation import check_choice
from gwa.rundir import RunWriter, epoch_metrics

#: Criteria of :mod:`gwa.experiments.criteria` that the integrations can monitor (they need only the rows written).
MONITORS = ("gwa", "gwa_paper", "align_mean")
#: The warm-up fraction of the paper's rule (the first 10% of training is skipped).
WARMUP_FRAC = 0.1


def log_values(summary) -> dict[str, float]:
    """The scalars a trainer's loggers receive each epoch (``gwa`` is the paper's value, pole included)."""
    return {"gwa": float(summary.gwa), "gwa/align_mean": float(summary.mean), "gwa/align_std": float(summary.std),
            "gwa/excess_kurtosis": float(summary.excess_kurtosis), "gwa/flagged": float(summary.flagged)}


class EpochMonitor:
    """Stop rule, best epoch (and optionally its weights) and run directory, fed one epoch at a time.

    Args:
        monitor: the criterion that picks the best epoch: ``"gwa"`` (gwa's default, ``criteria.DEFAULT``),
            ``"gwa_paper"`` (the paper's GWA verbatim) or ``"align_mean"``.
        patience: stop when the best epoch lies this many epochs (after the warm-up) behind the current one;
            None never stops (the best epoch is still tracked).
        finetune: use the paper's fine-tuning rule (first minimum, then the maximum after it).
        restore_best_weights: keep a CPU copy of the weights of the best epoch so that :meth:`finish` can load
            them into the model, whether or not training stopped early.
        run_dir: write a run directory there (needs sample ids for the per-sample scores).
        run_config: extra JSON-serialisable entries for the run's ``config.json``.
        overwrite: allow ``run_dir`` to replace another run.
        labels: optional ``(N,)`` training labels by sample id, written to ``labels.npy`` (used by ``gwa flag``).
        noise_mask: optional ``(N,)`` bool mask of known mislabeled samples, for ``gwa flag`` / ``gwa report``.
    """

    def __init__(self, *, monitor: str = "gwa", patience: int | None = None, finetune: bool = False,
                 restore_best_weights: bool = False, run_dir=None, run_config: dict | None = None,
                 overwrite: bool = False, labels=None, noise_mask=None):
        check_choice("monitor", monitor, MONITORS)
        if patience is not None and not (isinstance(patience, int) and not isinstance(patience, bool)
                                         and patience >= 1):
            raise ValueError(f"Expected `patience` to be an integer >= 1 or None; got {patience!r}.")
        if run_config is not None and not isinstance(run_config, dict):
            raise TypeError(f"Expected `run_config` to be a dict; got {type(run_config).__name__}.")
        self.monitor, self.patience, self.finetune = monitor, patience, bool(finetune)
        self.restore_best_weights = bool(restore_best_weights)
        self.run_dir, self.run_config, self.overwrite = run_dir, dict(run_config or {}), bool(overwrite)
        self.labels, self.noise_mask = labels, noise_mask
        self.max_epochs: int | None = None
        self.rows: list[dict] = []
        self.best_epoch: int | None = None  # 1-based
        self.stopped_epoch: int | None = None
        self.best_state: dict | None = None
        self.best_state_epoch: int | None = None
        self.writer: RunWriter | None = None
        self._pending: dict | None = None
        self._started = False
        self._wall = 0.0
        self._t0: float | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self, *, max_epochs: int | None, num_samples: int | None, write: bool, framework: str) -> None:
        """Begin (or resume) training: open the run directory on the writing rank."""
        self.max_epochs = max_epochs if max_epochs and max_epochs > 0 else None
        resumed = self._pending is not None
        if resumed:
            self._load_pending()
        else:  # a new fit with the same callback starts from scratch
            self.rows, self.best_epoch, self.stopped_epoch = [], None, None
            self.best_state, self.best_state_epoch, self._wall = None, None, 0.0
        self._started = True
        if self.run_dir is not None and write:
            if num_samples is None:
                raise ValueError("Expected `num_samples` (the dataset size) to write `run_dir`; got None and could "
                                 "not infer it from the training dataloader's dataset.")
            config = {"framework": framework, "monitor": self.monitor, "patience": self.patience,
                      "finetune": self.finetune, "max_epochs": self.max_epochs, **self.run_config}
            self.writer = RunWriter(self.run_dir, config, num_samples, labels=self.labels,
                                    noise_mask=self.noise_mask, resume=resumed and _has_run(self.run_dir),
                                    resume_epoch=len(self.rows) if resumed else None, overwrite=self.overwrite)
        self._t0 = time.perf_counter()

    @property
    def warmup(self) -> int:
        """Epochs that can be neither best nor count toward patience: the first 10% of ``max_epochs``."""
        total = self.max_epochs or len(self.rows)
        return math.floor(WARMUP_FRAC * total)

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
        from gwa.experiments import criteria

        if not self._started:
            raise RuntimeError("EpochMonitor.end_epoch() before start().")
        now = time.perf_counter()
        self._wall += now - (self._t0 or now)
        self._t0 = now
        epoch = int(result.epoch)
        row = {"epoch": epoch, **(extra or {}), **epoch_metrics(result.summary),
               "n_duplicates": int(result.n_duplicates), "n_non_finite": int(result.n_non_finite),
               "wall_time": self._wall}
        self.rows.append(row)
        pad = [{"epoch": e} for e in range(len(self.rows) + 1, (self.max_epochs or 0) + 1)]
        self.best_epoch = criteria.select_all([*self.rows, *pad], finetune=self.finetune).get(self.monitor)
        if self.best_epoch == epoch and self.restore_best_weights and model_state is not None:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model_state().items()}
            self.best_state_epoch = epoch
        since = epoch - max(self.best_epoch or 0, self.warmup)
        if self.patience is not None and self.stopped_epoch is None and since >= self.patience:
            self.stopped_epoch = epoch
        if self.writer is not None:
            scores = None if result.scores is None else {"alignment": result.scores, **result.signals}
            self.writer.log_epoch(row, scores)
        return row, self.stopped_epoch is not None

    def finish(self, load_state: Callable[[dict], object] | None = None) -> None:
        """End of training: load the best weights (when kept) and close the run directory with its choices."""
        if self.best_state is not None and load_state is not None:
            if self.best_state_epoch != self.best_epoch:
                warnings.warn(f"gwa: the best epoch is {self.best_epoch}, but the weights kept are those of epoch "
                              f"{self.best_state_epoch} (the criterion moved back to an epoch not kept, e.g. with "
                              "finetune=True); loading them.", RuntimeWarning, stacklevel=2)
            load_state(self.best_state)
        if self.writer is not None:
            from gwa.experiments import criteria

            choices = criteria.select_all(self.rows, finetune=self.finetune) if self.rows else {}
            self.writer.write_summary({"criteria": {name: {"epoch": e} for name, e in choices.items()},
                                       "monitor": self.monitor, "best_epoch": self.best_epoch,
                                       "stopped_epoch": self.stopped_epoch})
            self.writer.finish()

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain values (and CPU tensors for the best weights): enough to resume with the same decisions."""
        if not self._started:
            return {"monitor": self.monitor, **(self._pending or {})}
        return {"monitor": self.monitor, "rows": [dict(r) for r in self.rows], "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "wall": self._wall, "best_state": self.best_state,
                "best_state_epoch": self.best_state_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") != self.monitor:
            raise ValueError(f"Expected a state with monitor={self.monitor!r}; got {state.get('monitor')!r}.")
        self._pending = dict(state) if "rows" in state else None
        if self._started and self._pending is not None:
            self._load_pending()

    def _load_pending(self) -> None:
        state, self._pending = self._pending, None
        self.rows = [dict(r) for r in state["rows"]]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self._wall = float(state["wall"])
        self.best_state, self.best_state_epoch = state.get("best_state"), state.get("best_state_epoch")


def _has_run(path) -> bool:
    from pathlib import Path

    return (Path(path) / "config.json").exists()
