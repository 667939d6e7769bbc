"""``RunRecorder``: a complete run directory and the stop decision from a plain PyTorch training loop."""

from __future__ import annotations

import torch
from gwa import DEFAULT_CRITERION
from gwa.integrations._collect import LabelCollector, PreviewCollector, is_soft
from gwa.integrations._epoch_values import warn_diagnostics
from gwa.integrations._monitor import EpochMonitor
from gwa.integrations.loggers import check_loggers

#: Per-sample signals the report and ``gwa flag`` use: the loss, the prediction and whether it was right.
RECOMMENDED_SIGNALS = ("loss", "pred", "correct")


class RunRecorder:
    """Write the run directory of your own loop (what ``gwa report`` / ``gwa flag`` read) and decide when to stop.

    Scores go through your :class:`gwa.torch.GWATracker` as usual; the recorder adds what a report needs: the
    labels by sample id (from the targets it sees, unless ``labels=`` is given), the per-sample signals of the
    tracker (create it with ``signals=RECOMMENDED_SIGNALS`` for the loss and the prediction of every sample), a few
    inputs for thumbnails, the metrics of every epoch and the choice of every stop criterion at the end. The
    decision is the core policy's (:class:`gwa.EarlyStopper`, through :class:`EpochMonitor`), as in the callbacks.

    Args:
        run_dir: the run directory to write.
        tracker: the loop's :class:`gwa.torch.GWATracker`, with ``num_samples`` (scores by sample id).
        total_epochs: the planned epochs (fixes the warm-up, the first 10%).
        monitor, patience, finetune: the criterion and the stop rule (see :class:`EpochMonitor`).
        config: JSON-serialisable entries for ``config.json`` (``model``, ``dataset``, ``lr``, ... fill the
            report's run table).
        labels: ``(N,)`` training labels by sample id; default: collected from the targets of :meth:`update`.
        noise_mask: ``(N,)`` bool mask of known mislabeled samples (for ``gwa flag``'s precision and recall).
        previews: keep some inputs (float tensors: images or 1-D signals) for the report's thumbnails.
        overwrite: allow replacing another run in ``run_dir``.
        veto: the tiny-split veto (see :class:`EpochMonitor`): hold out a small noisy split of your training data
            (e.g. 2%, stratified), and pass its accuracy each epoch: ``recorder.end_epoch(result,
            veto_acc=accuracy)``; or a callable ``veto(model) -> accuracy`` called after each epoch.
        loggers: :class:`gwa.integrations.loggers.TensorBoardLogger`, :class:`~gwa.integrations.loggers.WandbLogger`
            (or a list of them) receiving each epoch's values, the stop decision and a histogram of the
            per-sample alignment, then the chosen epoch and the diagnostics; closed by :meth:`finish`.

    When the choice is made (:meth:`finish`, or leaving the ``with`` block), each diagnostic of
    :func:`gwa.policy.diagnose` is raised as one ``RuntimeWarning`` and kept in :attr:`diagnostics`.

    Under ``torch.distributed`` create it on every rank; rank 0 writes, and :meth:`end_epoch` is a collective.

    Example::

        tracker = GWATracker(model, num_samples=len(train_set), signals=RECOMMENDED_SIGNALS)
        with RunRecorder("runs/mine", tracker, total_epochs=epochs, patience=5) as recorder:
            for epoch in range(1, epochs + 1):
                for x, y, idx in loader:
                    logits = model(x); ...
                    recorder.update(logits, y, idx, inputs=x)     # tracker.update + labels + previews
                if recorder.end_epoch(tracker.end_epoch(), train_loss=epoch_loss):
                    break                                         # recorder.message says why

    With soft targets (mixup, CutMix, label smoothing) the target is not the dataset's label (the argmax of a mixed
    row is the partner's label when ``lam < 0.5``) and the mixed inputs are not the sample's picture: pass the
    batch's own labels and unmixed inputs, ``recorder.update(logits, mixed_targets, idx, labels=y, inputs=x)``,
    or ``labels=`` (all N) when creating the recorder.
    """

    def __init__(
        self,
        run_dir,
        tracker,
        *,
        total_epochs: int | None = None,
        monitor: str = DEFAULT_CRITERION,
        patience: int | None = None,
        finetune: bool = False,
        config: dict | None = None,
        labels=None,
        noise_mask=None,
        previews: bool = True,
        overwrite: bool = False,
        loggers=None,
        veto=False,
    ):
        loggers = check_loggers(loggers)
        num_samples = getattr(tracker, "num_samples", None)
        if not isinstance(num_samples, int):
            raise TypeError(
                f"Expected a GWATracker created with num_samples= (scores by sample id); got "
                f"{type(tracker).__name__} with num_samples={num_samples!r}."
            )
        if total_epochs is not None and (
            isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs <= 0
        ):
            raise ValueError(f"Expected `total_epochs` to be a positive int or None; got {total_epochs!r}.")
        self.tracker = tracker
        rank = (
            torch.distributed.get_rank()
            if (torch.distributed.is_available() and torch.distributed.is_initialized())
            else 0
        )
        self._writes = rank == 0
        self.monitor = EpochMonitor(
            monitor=monitor,
            patience=patience,
            finetune=finetune,
            run_dir=run_dir,
            run_config={"head": tracker.head_name, "signals": list(tracker.signals), **(config or {})},
            overwrite=overwrite,
            labels=labels,
            noise_mask=noise_mask,
            veto=veto,
            loggers=loggers if self._writes else None,  # the writing rank logs, the others decide alike
        )
        self._labels = LabelCollector(num_samples) if labels is None else None
        self._previews = PreviewCollector(num_samples) if previews else None
        self.monitor.start(
            max_epochs=total_epochs, num_samples=num_samples, write=self._writes, framework="loop"
        )
        self._finished = False

    def observe(self, targets, sample_ids, inputs=None) -> None:
        """Record the batch's labels (and inputs for previews) without scoring it."""
        if self._labels is not None:
            self._labels.observe(targets, sample_ids)
        if self._previews is not None and inputs is not None:
            self._previews.observe(inputs, sample_ids)

    def update(self, logits, targets, sample_ids, *, inputs=None, labels=None) -> torch.Tensor | None:
        """``tracker.update(logits, targets, sample_ids=...)``, then :meth:`observe`; returns what it returns (the
        batch's scores with ``defer=0``, else None).

        ``labels``: the batch's class ids as the dataset has them, needed with soft ``targets`` (mixup, CutMix,
        smoothing) unless the recorder was created with ``labels=``; ``inputs`` are then taken to be the unmixed
        ones. Soft targets without ``labels`` keep no previews, since their inputs are likely mixed.
        """
        if sample_ids is None:
            raise ValueError(
                "Expected `sample_ids` (the samples' indices in the training set) for a run directory; "
                "got None. Wrap the dataset: gwa.integrations.WithIndex(train_set) yields (x, y, index)."
            )
        soft = is_soft(targets)
        if labels is None and soft and self._labels is not None:
            raise ValueError(
                f"Expected `labels=` (the batch's class ids in the dataset, before mixing) with soft targets of "
                f"shape {tuple(targets.shape)}, or RunRecorder(labels=...); got none. The argmax of a mixup/CutMix "
                "target is the partner's label when lam < 0.5, so gwa does not guess the labels from it."
            )
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.dim() != 1 or labels.is_floating_point() or labels.shape[0] != targets.shape[0]:
                raise ValueError(
                    f"Expected `labels` as the batch's integer class ids of shape ({targets.shape[0]},); got "
                    f"shape {tuple(labels.shape)}, dtype {labels.dtype}."
                )
        scores = self.tracker.update(logits, targets, sample_ids=sample_ids)
        if labels is not None or not soft:
            self.observe(targets if labels is None else labels, sample_ids, inputs)
        return scores

    def end_epoch(self, result, **metrics) -> bool:
        """Record the tracker's :class:`gwa.torch.EpochResult` with your epoch's scalars (``train_loss``,
        ``test_acc``, ``val_acc``, ...); returns True when the stop rule says to stop."""
        model_ref = getattr(self.tracker, "_model_ref", None)
        _, stop = self.monitor.end_epoch(
            result, extra=metrics, model=model_ref() if model_ref is not None else None
        )
        if self._labels is not None:
            self.monitor.write_labels(self._labels.labels())
        if self._previews is not None:
            self._previews.want(result.scores)
        return stop

    def finish(self) -> None:
        """Close the run directory: previews, each criterion's chosen epoch, status ``complete``."""
        if self._finished:
            return
        self._finished = True
        if self._previews is not None:
            self.monitor.write_previews(self._previews.previews())
        self.monitor.finish()  # the summary, then the loggers' choice
        if self._writes:
            warn_diagnostics(self.diagnostics)

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:  # an interrupted run stays "running", as far as it got
            self.finish()

    @property
    def best_epoch(self) -> int | None:
        """The best epoch so far (1-based), by the monitored criterion."""
        return self.monitor.best_epoch

    @property
    def message(self) -> str:
        """The last decision in words (:attr:`gwa.EarlyStopper.message`)."""
        return self.monitor.stopper.message

    @property
    def diagnostics(self) -> list:
        """What :func:`gwa.policy.diagnose` says against the choice (:class:`gwa.policy.Diagnostic`); empty
        before :meth:`finish` and when nothing known speaks against it."""
        return self.monitor.diagnostics

    @property
    def rows(self) -> list[dict]:
        return self.monitor.rows
