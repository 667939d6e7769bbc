"""What the Lightning and Hugging Face callbacks share: the options they forward to their :class:`EpochMonitor`
(declared once, :class:`MonitorOptions`), the recording after an epoch and at the end of training, and the result
properties (``rows``, ``best_epoch``, ``stopped_epoch``, ``diagnostics``, ``summary``).

A callback only finds the logits, targets and sample ids of its trainer's steps; everything after an epoch is the
monitor's, as for ``RunRecorder`` and ``gwa train``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from os import PathLike
from typing import Any, TypedDict

from gwa import policy
from gwa.integrations._collect import SOFT_TARGETS_WITHOUT_LABELS, LabelCollector, PreviewCollector
from gwa.integrations._epoch_values import warn_diagnostics
from gwa.integrations._monitor import EpochMonitor
from gwa.rundir import RunSummary


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
    _labels: LabelCollector | None = None
    _previews: PreviewCollector | None = None

    def _init_monitor(self, owner: str, veto, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(MONITOR_OPTIONS))
        if unknown:
            raise TypeError(
                f"{owner}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; expected the "
                f"callback's own or {', '.join(MONITOR_OPTIONS)}."
            )
        self.monitor = EpochMonitor(**options, veto=veto)

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
