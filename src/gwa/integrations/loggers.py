"""Send gwa's per-epoch values from any loop to TensorBoard or Weights & Biases.

Lightning and the Hugging Face ``Trainer`` forward the callbacks' values to their own loggers; a plain PyTorch or
Flax loop has none, so :class:`gwa.integrations.RunRecorder` takes ``loggers=`` (and any loop may call them
directly). Each epoch a logger receives the scalars of :func:`gwa.integrations.log_values` (``gwa``, ``gwa_paper``,
``gwa_paper_flagged``, ``align_mean``, ...: the names of ``metrics.jsonl``), the stop decision (``best_epoch``, as in
``summary.json``, and ``gwa/stop``) and a histogram of the per-sample alignment (``gwa/alignment``); at the end,
the chosen epoch (``best_epoch``) and one line per diagnostic (``gwa/diagnostics``).

The logger packages are optional: ``TensorBoardLogger`` imports ``torch.utils.tensorboard`` (extra
``tensorboard``), ``WandbLogger`` imports ``wandb`` (extra ``wandb``), each when it is created.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class EpochLogger(Protocol):
    """What :class:`gwa.integrations.RunRecorder` calls: one epoch's values, the final choice, then close."""

    def log_epoch(
        self, epoch: int, values: Mapping[str, float], alignment: np.ndarray | None = None
    ) -> None: ...

    def log_choice(self, best_epoch: int | None, diagnostics: Sequence[Any] = ()) -> None: ...

    def close(self) -> None: ...


def log_noise_map(logger, noise_estimate: Mapping[str, Any] | None) -> None:
    """Send the run's noise map (``summary.json``'s ``noise_estimate``) to a logger that takes it: an optional
    ``log_noise_map(noise_map)`` method, so that a custom logger with only :class:`EpochLogger`'s methods still
    works."""
    method = getattr(logger, "log_noise_map", None)
    if noise_estimate and callable(method):
        method(noise_estimate)


def _finite_scores(alignment) -> np.ndarray | None:
    """The seen samples' alignment (NaN marks a sample not seen this epoch), or None when there is none."""
    if alignment is None:
        return None
    values = np.asarray(alignment, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return values if values.size else None


def _missing(package: str, extra: str, logger: str) -> ImportError:
    return ImportError(
        f"{logger} needs the `{package}` package; install it with: pip install 'gwa-alignment[{extra}]' "
        f"(or pip install {package})."
    )


class TensorBoardLogger:
    """Write gwa's values to a TensorBoard event file (``torch.utils.tensorboard.SummaryWriter``).

    Args:
        log_dir: the event files' directory; or pass ``writer=`` an existing ``SummaryWriter``.
        writer: a ``SummaryWriter`` the loop already has (gwa's values then sit beside the loop's own).

    Scalars go under their ``metrics.jsonl`` names (``gwa``, ``gwa_paper``, ``align_mean``, ...) at step ``epoch``,
    the per-sample alignment as the histogram ``gwa/alignment``, the choice as ``best_epoch`` (at the last epoch's
    step) and the diagnostics as the text ``gwa/diagnostics``.
    """

    def __init__(self, log_dir=None, *, writer=None):
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise _missing("tensorboard", "tensorboard", "TensorBoardLogger") from e
            writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))
        elif log_dir is not None:
            raise ValueError(
                f"Expected `log_dir` or `writer`, not both; got log_dir={log_dir!r} and a writer."
            )
        self.writer = writer
        self._last_epoch = 0

    def log_epoch(self, epoch: int, values: Mapping[str, float], alignment=None) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), global_step=epoch)
        scores = _finite_scores(alignment)
        if scores is not None:
            self.writer.add_histogram("gwa/alignment", scores, global_step=epoch)
        self._last_epoch = epoch
        self.writer.flush()

    def log_choice(self, best_epoch: int | None, diagnostics: Sequence[Any] = ()) -> None:
        chosen = math.nan if best_epoch is None else float(best_epoch)
        self.writer.add_scalar("best_epoch", chosen, global_step=self._last_epoch)
        text = (
            "\n\n".join(str(d) for d in diagnostics)
            or "no diagnostic: nothing known speaks against the choice"
        )
        self.writer.add_text("gwa/diagnostics", text, global_step=self._last_epoch)
        self.writer.flush()

    def log_noise_map(self, noise_map: Mapping[str, Any]) -> None:
        """The run's noise map (``summary.json``'s ``noise_estimate``): its line as text ``gwa/noise_map`` and,
        when it does not abstain, its overall rate as the scalar ``gwa/noise_rate``."""
        if noise_map.get("reliable", True) and noise_map.get("rate") is not None:
            self.writer.add_scalar("gwa/noise_rate", float(noise_map["rate"]), global_step=self._last_epoch)
        self.writer.add_text(
            "gwa/noise_map", str(noise_map.get("description", "")), global_step=self._last_epoch
        )
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Log gwa's values to a Weights & Biases run.

    Args:
        run: a run the loop already has (``wandb.init(...)``); default: one started with ``init_kwargs``.
        **init_kwargs: passed to ``wandb.init`` (``project=``, ``dir=``, ``mode="offline"``, ...).

    Each epoch is one ``run.log`` call with the scalars, ``epoch`` and the histogram ``gwa/alignment``; the
    chosen epoch and the diagnostics go into the run's summary (``best_epoch``, ``gwa/diagnostics``).
    :meth:`close` finishes the run only when this logger started it.
    """

    def __init__(self, run=None, **init_kwargs):
        try:
            import wandb
        except ImportError as e:
            raise _missing("wandb", "wandb", "WandbLogger") from e
        if run is not None and init_kwargs:
            raise ValueError(
                f"Expected `run` or wandb.init arguments, not both; got a run and {sorted(init_kwargs)}."
            )
        self._wandb = wandb
        self._owns_run = run is None
        self.run = wandb.init(**init_kwargs) if run is None else run

    def log_epoch(self, epoch: int, values: Mapping[str, float], alignment=None) -> None:
        row: dict[str, Any] = {"epoch": epoch, **{k: float(v) for k, v in values.items()}}
        scores = _finite_scores(alignment)
        if scores is not None:
            row["gwa/alignment"] = self._wandb.Histogram(scores.tolist())
        self.run.log(row)

    def log_choice(self, best_epoch: int | None, diagnostics: Sequence[Any] = ()) -> None:
        self.run.summary["best_epoch"] = best_epoch
        self.run.summary["gwa/diagnostics"] = [str(d) for d in diagnostics]

    def log_noise_map(self, noise_map: Mapping[str, Any]) -> None:
        """The run's noise map (``summary.json``'s ``noise_estimate``) as the run summary's ``gwa/noise_map``."""
        self.run.summary["gwa/noise_map"] = dict(noise_map)

    def close(self) -> None:
        if self._owns_run:
            self.run.finish()


def epoch_values(values: Mapping[str, float], *, best_epoch: int | None, stop: bool) -> dict[str, float]:
    """The logged scalars plus the stop decision: ``best_epoch`` (NaN before one exists) and ``gwa/stop``."""
    return {
        **values,
        "best_epoch": math.nan if best_epoch is None else float(best_epoch),
        "gwa/stop": float(stop),
    }


def check_loggers(loggers) -> list:
    """``loggers=`` as a list, each with the three methods of :class:`EpochLogger`."""
    if loggers is None:
        return []
    items = list(loggers) if isinstance(loggers, (list, tuple)) else [loggers]
    for item in items:
        missing = [m for m in ("log_epoch", "log_choice", "close") if not callable(getattr(item, m, None))]
        if missing:
            raise TypeError(
                f"Expected `loggers` to hold TensorBoardLogger, WandbLogger or objects with log_epoch, "
                f"log_choice and close; got {type(item).__name__} without {', '.join(missing)}."
            )
    return items
