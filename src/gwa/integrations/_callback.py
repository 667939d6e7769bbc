"""What the Lightning and Hugging Face callbacks share: the options they forward to their :class:`EpochMonitor`
(declared once, :class:`MonitorOptions`), their common arguments (``head``, ``num_samples``, ``signals``,
``bias``), the start of training (tracker, collectors, run facts, the monitor's start), the recording after an
epoch and at the end of training, the checkpoint state (``state_dict``/``load_state_dict``) and the result
properties (``rows``, ``best_epoch``, ``stopped_epoch``, ``diagnostics``, ``summary``).

A callback only finds the logits, targets and sample ids of its trainer's steps; everything after an epoch is the
monitor's, as for ``RunRecorder`` and ``gwa train``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from os import PathLike
from typing import TYPE_CHECKING, Any, TypedDict

from gwa import policy
from gwa.integrations._collect import SOFT_TARGETS_WITHOUT_LABELS, LabelCollector, PreviewCollector
from gwa.integrations._epoch_values import warn_diagnostics
from gwa.integrations._monitor import EpochMonitor
from gwa.integrations._recorder import RECOMMENDED_SIGNALS
from gwa.rundir import RunSummary

if TYPE_CHECKING:
    from gwa.torch import EpochResult, GWATracker


class MonitorOptions(TypedDict, total=False):
    """The keyword arguments every trainer callback forwards to its :class:`EpochMonitor` (see there).

    ``monitor`` (the criterion, default ``"gwa"``), ``patience``, ``finetune``, ``restore_best_weights``,
    ``run_dir``, ``run_config``, ``overwrite``, ``labels``, ``noise_mask``.
    """

    monitor: str
    patience: int | None
    finetune: bool
    restore_best_weights: bool
    run_dir: str | PathLike[str] | None
    run_config: dict[str, Any] | None
    overwrite: bool
    labels: Any
    noise_mask: Any


MONITOR_OPTIONS: tuple[str, ...] = tuple(MonitorOptions.__annotations__)


class MonitoredCallback:
    """The base of the trainer callbacks: builds the monitor from :class:`MonitorOptions`, records each epoch's
    result, finishes the run, and exposes the monitor's results."""

    monitor: EpochMonitor
    tracker: GWATracker | None
    last_result: EpochResult | None
    _labels: LabelCollector | None = None
    _previews: PreviewCollector | None = None
    _pending_tracker: dict | None = None

    def _init_callback(
        self, owner: str, *, head, num_samples: int | None, signals, bias: bool, veto, options: dict[str, Any]
    ) -> None:
        """The arguments every callback takes: the monitor from ``options`` (:class:`MonitorOptions` only), and
        ``signals`` defaulting to ``("loss", "pred", "correct")`` with ``run_dir``, else none."""
        unknown = sorted(set(options) - set(MONITOR_OPTIONS))
        if unknown:
            raise TypeError(
                f"{owner}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; expected the "
                f"callback's own or {', '.join(MONITOR_OPTIONS)}."
            )
        self.monitor = EpochMonitor(**options, veto=veto)
        if signals is None:
            signals = RECOMMENDED_SIGNALS if self.monitor.run_dir is not None else ()
        self.head, self.num_samples, self.signals, self.bias = head, num_samples, signals, bias
        self.tracker = None
        self.last_result = None

    def _start(
        self,
        tracker: GWATracker,
        *,
        num_samples: int | None,
        max_epochs: int | None,
        main: bool,
        facts: dict[str, Any],
        framework: str,
    ) -> None:
        """The start of training, once the callback built its ``tracker``: a tracker state loaded before (see
        :meth:`_hold_tracker_state`), the label and preview collectors (with ``run_dir``; previews on the ``main``
        process), the run ``facts`` for the report's run table (the user's ``run_config`` wins), the monitor's
        start."""
        self.tracker = tracker
        if self._pending_tracker is not None:
            tracker.load_state_dict(self._pending_tracker)
            self._pending_tracker = None
        self._labels, self._previews = None, None
        if self.monitor.run_dir is not None and num_samples is not None:  # collect what the run dir holds
            self._labels = LabelCollector(num_samples) if self.monitor.labels is None else None
            self._previews = PreviewCollector(num_samples) if main else None
        for key, value in facts.items():
            self.monitor.run_config.setdefault(key, value)
        self.monitor.start(max_epochs=max_epochs, num_samples=num_samples, write=main, framework=framework)

    def _record_epoch(
        self,
        result,
        *,
        extra: dict,
        model_state: Callable[[], dict] | None,
        model,
        per_sample: bool = True,
    ) -> bool:
        """One epoch's result through the monitor, then the labels seen (a collective under DDP: every rank calls
        it) and the previews wanted; returns whether the stop rule fired."""
        _, stop = self.monitor.end_epoch(
            result, extra=extra, model_state=model_state, per_sample=per_sample, model=model
        )
        if self._labels is not None:
            self.monitor.write_labels(self._labels.labels())
            if self._labels.saw_soft and result.epoch == 1:
                warnings.warn(SOFT_TARGETS_WITHOUT_LABELS, UserWarning, stacklevel=3)
        if self._previews is not None:
            self._previews.want(result.scores)
        return stop

    def _finish_run(
        self, load_state: Callable[[dict], object] | None, *, main: bool, summary: dict | None = None
    ) -> None:
        """The end of training: previews, the monitor's conclusion (best weights, summary.json), and on the main
        process one ``RuntimeWarning`` per diagnostic."""
        if self._previews is not None:
            self.monitor.write_previews(self._previews.previews())
        self.monitor.finish(load_state, summary=summary)
        if main:
            warn_diagnostics(self.diagnostics, stacklevel=4)  # at the trainer calling on_train_end

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The tracker's and the monitor's state (a tracker state loaded before training: that one)."""
        tracker = self.tracker.state_dict() if self.tracker is not None else self._pending_tracker
        return {"tracker": tracker, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.monitor.load_state_dict(state_dict["monitor"])
        if self.tracker is not None and state_dict["tracker"] is not None:
            self.tracker.load_state_dict(state_dict["tracker"])
        elif self.tracker is None:
            self._hold_tracker_state(state_dict["tracker"])

    def _hold_tracker_state(self, state: dict | None) -> None:
        """A tracker state loaded before training built the tracker: kept for :meth:`_start` (Lightning restores
        a callback's state before ``on_train_start``)."""
        self._pending_tracker = state

    # ----------------------------------------------------------------------------------------------- results
    @property
    def rows(self) -> list[dict]:
        """The per-epoch metric rows (the run directory's ``metrics.jsonl``)."""
        return self.monitor.rows

    @property
    def best_epoch(self) -> int | None:
        """The best epoch so far (1-based), by the monitored criterion (or the veto)."""
        return self.monitor.best_epoch

    @property
    def stopped_epoch(self) -> int | None:
        """The epoch where the stop rule stopped training, or None."""
        return self.monitor.stopped_epoch

    @property
    def diagnostics(self) -> list[policy.Diagnostic]:
        """Why not to trust the best epoch (:func:`gwa.policy.diagnose`), after training; empty: none known."""
        return self.monitor.diagnostics

    @property
    def summary(self) -> RunSummary | None:
        """The run's :class:`gwa.rundir.RunSummary` after training (what ``summary.json`` holds), else None."""
        return self.monitor.summary


def dataset_size(loader) -> int | None:
    """``len(loader.dataset)``; None without a loader or a dataset, or for an ``IterableDataset`` without
    ``__len__``."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None
