"""The one after-epoch path: what every surface does once an epoch's alignment is known.

:class:`EpochMonitor` turns each epoch into a metrics row, a stop decision (the core policy's
:class:`gwa.EarlyStopper`, the veto included), the run directory's writes and the loggers' values, and at the end
into the run's :class:`gwa.rundir.RunSummary` (``summary.json``). ``gwa train`` (torch and jax, through
:class:`gwa.runner.loop.EpochLoop`), ``RunRecorder``, the Lightning and Hugging Face callbacks and the examples
all hand it their epochs; they only find logits, targets and sample ids (and evaluate, for ``gwa train``), so they
keep the same epoch, stop at the same one and write the same run directory (:mod:`gwa.rundir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gwa import DEFAULT_CRITERION, ClassEvidence, EarlyStopper, EpochSummary, policy
from gwa.integrations._classes import ClassLog
from gwa.integrations._conclude import alignment_history, conclude
from gwa.integrations._epoch_values import log_values, signal_mean, split_accuracy
from gwa.integrations._kept_weights import KeptWeights
from gwa.integrations.loggers import check_loggers, epoch_values, log_noise_map
from gwa.rundir import RunSummary, RunWriter


class EpochMonitor:
    """Stop rule, best epoch (and optionally its weights) and run directory, fed one epoch at a time.

    Args:
        monitor: the criterion that picks the best epoch: ``"gwa"`` (gwa's default, :data:`gwa.DEFAULT_CRITERION`),
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
        veto: the tiny-split veto (``EarlyStopper(veto=True)``): the epoch kept is the one, among gwa's own
            candidates' choices, with the best accuracy on a small noisy split of the training data that the model
            does not train on. ``True``: the split's accuracy comes in each epoch's row as ``veto_acc`` (``extra=``
            of :meth:`end_epoch`, a Lightning metric logged as ``veto_acc``, ``RunRecorder.end_epoch(result,
            veto_acc=...)``); a callable ``veto(model) -> accuracy`` is called after each epoch instead (in eval
            mode, without gradients; :meth:`end_epoch`'s ``model=``). False (default): no veto.
        loggers: :class:`gwa.integrations.loggers.TensorBoardLogger`, ``WandbLogger`` (or objects with their three
            methods) receiving each epoch's values, the decision and the alignment histogram, then the choice;
            closed by :meth:`finish`. Give them on the writing rank only.

    Each epoch's per-class evidence (:attr:`gwa.torch.EpochResult.class_evidence`) goes to ``classes.jsonl``
    and, at the end, into the noise map (``summary.json``'s ``noise_estimate``, :attr:`noise_map`) and the
    diagnostics (``class_conditional``).
    """

    def __init__(
        self,
        *,
        monitor: str = DEFAULT_CRITERION,
        patience: int | None = None,
        finetune: bool = False,
        restore_best_weights: bool = False,
        run_dir=None,
        run_config: dict | None = None,
        overwrite: bool = False,
        labels=None,
        noise_mask=None,
        veto=False,
        loggers=None,
    ):
        self.loggers = check_loggers(loggers)
        if not (isinstance(veto, bool) or callable(veto)):
            raise TypeError(
                f"Expected `veto` to be True, False or a callable veto(model) -> accuracy; got {veto!r}."
            )
        self.veto, self.veto_accuracy = bool(veto), veto if callable(veto) else None
        EarlyStopper(monitor, patience=patience, finetune=finetune)  # validates the options now
        if run_config is not None and not isinstance(run_config, dict):
            raise TypeError(f"Expected `run_config` to be a dict; got {type(run_config).__name__}.")
        self.monitor, self.patience, self.finetune = monitor, patience, bool(finetune)
        self.restore_best_weights = bool(restore_best_weights)
        self.run_dir, self.run_config, self.overwrite = run_dir, dict(run_config or {}), bool(overwrite)
        self.labels, self.noise_mask = labels, noise_mask
        self.max_epochs: int | None = None
        self.rows: list[dict] = []
        self.stopper = EarlyStopper(monitor, patience=patience, finetune=finetune, veto=self.veto, warn=False)
        self.classes = ClassLog()
        self.noise_map: policy.NoiseMap | None = None
        self.weights = KeptWeights(veto=self.veto)  # with restore_best_weights
        self.writer: RunWriter | None = None
        self.diagnostics: list[policy.Diagnostic] = []
        #: The run's :class:`gwa.rundir.RunSummary` once :meth:`finish` concluded it (written or not).
        self.summary: RunSummary | None = None
        self.num_samples: int | None = None
        self._last_scores: np.ndarray | None = None
        self._pending: dict | None = None
        self._started = False
        self._wall = 0.0
        self._t0: float | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(
        self,
        *,
        max_epochs: int | None,
        num_samples: int | None,
        write: bool,
        framework: str,
        writer=None,
    ) -> None:
        """Begin (or resume) training: open the run directory on the writing rank.

        ``writer``: a run directory the caller opened itself (``gwa train``: a :class:`gwa.rundir.RunWriter`, or
        a stand-in that writes nothing on the other ranks); the monitor then writes into it and opens none.
        """
        self.num_samples = num_samples
        self.max_epochs = max_epochs if max_epochs and max_epochs > 0 else None
        resumed = self._pending is not None
        if resumed:
            self._load_pending()
        else:  # a new fit with the same callback starts from scratch
            self.rows = []
            self.stopper = self._new_stopper()
            self.classes = ClassLog()
            self.weights, self._wall = KeptWeights(veto=self.veto), 0.0
        self.noise_map = None
        self.diagnostics, self._last_scores, self.summary = [], None, None
        self._started = True
        if writer is not None:
            self.writer = writer
        elif self.run_dir is not None and write:
            if num_samples is None:
                raise ValueError(
                    "Expected `num_samples` (the dataset size) to write `run_dir`; got None and could "
                    "not infer it from the training dataloader's dataset."
                )
            config = {
                "framework": framework,
                "monitor": self.monitor,
                "patience": self.patience,
                "finetune": self.finetune,
                "max_epochs": self.max_epochs,
                **self.run_config,
            }
            self.writer = RunWriter(
                self.run_dir,
                config,
                num_samples,
                labels=self.labels,
                noise_mask=self.noise_mask,
                resume=resumed and _has_run(self.run_dir),
                resume_epoch=len(self.rows) if resumed else None,
                overwrite=self.overwrite,
            )
        self._t0 = time.perf_counter()

    def _new_stopper(self) -> EarlyStopper:
        return EarlyStopper(
            self.monitor,
            patience=self.patience,
            total_epochs=self.max_epochs,
            finetune=self.finetune,
            veto=self.veto,
            warn=False,
        )

    @property
    def best_epoch(self) -> int | None:
        """The best epoch so far (1-based), by the monitored criterion."""
        return self.stopper.best_epoch

    @property
    def stopped_epoch(self) -> int | None:
        return self.stopper.stopped_epoch

    @property
    def best_state(self) -> dict | None:
        """The CPU copy of the best epoch's weights kept for ``restore_best_weights`` (None: none kept)."""
        return self.weights.best_state

    def log_values(self, summary: EpochSummary, epoch: int) -> dict[str, float]:
        """The epoch's scalars for the trainer's loggers (:func:`log_values`)."""
        return log_values(summary, epoch=epoch, total_epochs=self.max_epochs)

    def end_epoch(
        self,
        result,
        *,
        extra: dict | None = None,
        model_state: Callable[[], dict] | None = None,
        per_sample: bool = True,
        model=None,
    ) -> tuple[dict, bool]:
        """Record one :class:`gwa.torch.EpochResult` (:meth:`record` with its summary, scores and evidence).

        Args:
            result: the tracker's epoch result.
            extra: further scalars for the metrics row (``step``, ``train_loss``, ``val_acc``, ...).
            model_state: returns the model's ``state_dict``; called when the epoch is the new best and
                ``restore_best_weights`` is on.
            per_sample: write the per-sample scores; False when the batches carried no sample ids (scores by
                position in the epoch would follow no sample across shuffled epochs).
            model: the model, for a callable ``veto``.

        Returns:
            ``(row, stop)``: the run directory's metrics row and whether the stop rule fired.
        """
        extra = dict(extra or {})
        for key, signal in (("train_loss", "loss"), ("train_acc", "correct")):
            if extra.get(key) is None and (value := signal_mean(result.signals.get(signal))) is not None:
                extra[key] = (
                    value  # the mean over the samples seen (at their forward pass, as gwa train logs)
                )
        if self.veto_accuracy is not None and model is not None:
            extra["veto_acc"] = split_accuracy(self.veto_accuracy, model)
        scores = (
            None
            if result.scores is None or not per_sample
            else {"alignment": result.scores, **result.signals}
        )
        return self.record(
            int(result.epoch),
            result.summary,
            extra=extra,
            scores=scores,
            evidence=getattr(result, "class_evidence", None),  # per epoch: needs no sample ids
            n_duplicates=int(result.n_duplicates),
            n_non_finite=int(result.n_non_finite),
            model_state=model_state,
        )

    def record(
        self,
        epoch: int,
        summary: EpochSummary,
        *,
        extra: dict | None = None,
        scores: dict | None = None,
        evidence: ClassEvidence | None = None,
        n_duplicates: int = 0,
        n_non_finite: int = 0,
        seconds: float | None = None,
        model_state: Callable[[], dict] | None = None,
    ) -> tuple[dict, bool]:
        """The after-epoch step of every surface: the metrics row, the stop decision, the kept weights, the run
        directory's writes (row, per-sample ``scores``, ``classes.jsonl``) and the loggers.

        Args:
            epoch: the 1-based epoch, the one after the last recorded.
            summary: the epoch's :class:`gwa.EpochSummary`.
            extra: the row's further scalars (``step``, ``lr``, ``train_loss``, ``test_acc``, ``veto_acc``, ...).
            scores: per-sample arrays by sample id (``alignment`` and the signals) to write; None: none.
            evidence: the epoch's :class:`gwa.ClassEvidence` (``classes.jsonl``, the noise map, the veto).
            n_duplicates, n_non_finite: the tracker's counts for the row.
            seconds: the epoch's duration for ``wall_time``; default: the time since the last call (or start).
            model_state: see :meth:`end_epoch`.

        Returns:
            ``(row, stop)``: the metrics row and whether the stop rule fired.
        """
        if not self._started:
            raise RuntimeError("EpochMonitor.end_epoch() before start().")
        if epoch != self.stopper.epoch + 1:
            raise ValueError(
                f"Expected epoch {self.stopper.epoch + 1} next; got an EpochResult of epoch {epoch}."
            )
        now = time.perf_counter()
        self._wall += now - (self._t0 or now) if seconds is None else seconds
        self._t0 = now
        row = {
            "epoch": epoch,
            **(extra or {}),
            **summary.metrics(),
            "n_duplicates": int(n_duplicates),
            "n_non_finite": int(n_non_finite),
            "wall_time": self._wall,
        }
        self.rows.append(row)
        self._last_scores = None if scores is None else scores.get("alignment")
        veto_acc = row.get("veto_acc") if self.veto else None
        stop = self.stopper.step(self.classes.stopper_row(row, evidence), veto_accuracy=veto_acc)
        if self.restore_best_weights and model_state is not None:
            candidates = self.stopper.candidate_epochs.values()
            self.weights.keep(epoch, model_state, best_epoch=self.best_epoch, candidates=candidates)
        if self.writer is not None:
            self.writer.log_epoch(row, scores)
        self.classes.add(epoch, evidence, self.writer)
        if self.loggers:
            values = epoch_values(self.log_values(summary, epoch), best_epoch=self.best_epoch, stop=stop)
            for logger in self.loggers:
                logger.log_epoch(epoch, values, alignment=self._last_scores)
        return row, stop

    def replay(self, rows: list[dict], evidence: list[ClassEvidence | None]) -> None:
        """Take ``rows`` (already in the run directory) as the history and make their decisions again, writing
        nothing: for a run resumed with no epoch left to train (the stopper gives the same answers on the same
        rows)."""
        if not self._started:
            raise RuntimeError("EpochMonitor.replay() before start().")
        self.rows, self.stopper, self.classes = [], self._new_stopper(), ClassLog()
        for row, record in zip(rows, evidence, strict=True):
            self.rows.append(dict(row))
            veto_acc = row.get("veto_acc") if self.veto else None
            self.stopper.step(self.classes.stopper_row(row, record), veto_accuracy=veto_acc)
            self.classes.add(int(row["epoch"]), record)
        self._wall = float(rows[-1].get("wall_time") or 0.0) if rows else 0.0

    def write_labels(self, labels) -> None:
        """Write the training labels by sample id (``-1`` where unseen) gathered from the batches, unless the user
        gave ``labels=``."""
        if self.writer is not None and self.labels is None and labels is not None:
            self.writer.write_labels(labels)

    def write_previews(self, previews) -> None:
        """Write ``(sample_ids, inputs)`` for the report's thumbnails (None: nothing to write)."""
        if self.writer is not None and previews is not None:
            self.writer.write_previews(*previews)

    def finish(
        self, load_state: Callable[[dict], object] | None = None, *, summary: dict | None = None
    ) -> RunSummary:
        """End of training: load the best weights (when kept), conclude (:func:`gwa.integrations._conclude.conclude`:
        each criterion's choice, the noise map, :attr:`diagnostics` by :func:`gwa.policy.diagnose`), write
        ``summary.json`` and close the run directory, then hand the choice to the loggers and close them.

        ``summary``: fields of :class:`gwa.rundir.RunSummary` only this surface knows (``best_model_dir``,
        ``gwa train``'s ``noise``). Returns the summary (also :attr:`summary`), written or not.
        """
        if load_state is not None:
            self.weights.load_best(load_state, self.best_epoch)
        conclusion = conclude(
            self.rows,
            self.classes,
            self.stopper,
            monitor=self.monitor,
            finetune=self.finetune,
            veto=self.veto,
            alignment=alignment_history(self.writer, self._last_scores),
            num_samples=self.num_samples,
            class_names=self.run_config.get("class_names"),
            extra=summary,
        )
        self.noise_map, self.diagnostics, self.summary = (
            conclusion.noise_map,
            conclusion.diagnostics,
            conclusion.summary,
        )
        if self.writer is not None and hasattr(self.writer, "write_summary"):
            self.summary = self.writer.write_summary(conclusion.summary)
            self.writer.finish()
        for logger in self.loggers:  # the choice and what speaks against it
            logger.log_choice(self.best_epoch, self.diagnostics)
            log_noise_map(logger, self.summary["noise_estimate"])
            logger.close()
        return self.summary

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain values (and CPU tensors for the best weights): enough to resume with the same decisions."""
        if not self._started:
            return {"monitor": self.monitor, **(self._pending or {})}
        return {
            "monitor": self.monitor,
            "rows": [dict(r) for r in self.rows],
            "stopper": self.stopper.state_dict(),
            "max_epochs": self.max_epochs,
            "wall": self._wall,
            **self.weights.state_dict(),
            "classes": self.classes.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("monitor") != self.monitor:
            raise ValueError(f"Expected a state with monitor={self.monitor!r}; got {state.get('monitor')!r}.")
        self._pending = dict(state) if "rows" in state else None
        if self._started and self._pending is not None:
            self._load_pending()

    def _load_pending(self) -> None:
        state, self._pending = self._pending, None
        assert state is not None  # both callers check _pending first
        self.rows = [dict(r) for r in state["rows"]]
        # The current plan (a resumed fit may plan more epochs); the stopper replays the stored values under it.
        self.stopper = self._new_stopper()
        self.stopper.load_state_dict(state["stopper"])
        self._wall = float(state["wall"])
        self.weights = KeptWeights(veto=self.veto)
        self.weights.load_state_dict(state)
        self.classes = ClassLog()
        self.classes.load_state_dict(state.get("classes") or [None] * len(self.rows))


def _has_run(path) -> bool:
    return (Path(path) / "config.json").exists()
