"""Lightning callback: GWA from the training batches, logged, with a stop rule and best-epoch choice.

Contract with the ``LightningModule``:

- ``training_step`` returns a dict with ``"loss"`` and ``"logits"`` (``(B, C)``, the output of the classifier
  head in that step); it may add ``"targets"`` and ``"sample_ids"`` to override what is read from the batch.
- The batch holds the targets and, for per-sample scores, the sample ids (dataset indices): a tuple/list
  ``(x, y)`` or ``(x, y, ..., ids)`` (ids last), or a dict with ``"targets"``/``"labels"``/``"label"``/``"y"`` and
  ``"sample_ids"``/``"sample_id"``/``"index"``/``"idx"``. Anything else: pass ``batch_to_targets_ids``.
- The head is found by :func:`gwa.torch.find_head` (the last ``nn.Linear``, or ``head=``); one forward of the
  module in training mode per ``training_step`` (a second forward, e.g. for a consistency loss, needs
  ``head=`` on a layer only the scored pass runs, or the plain tracker).

The callback computes GWA, logs it and decides to stop in the same hook (``on_train_epoch_end``), so the
decision does not depend on the order of callbacks (Lightning PR #16567). Under ``strategy="ddp"`` the moments
are merged exactly across ranks and the per-sample scores are deduplicated by sample id, so every rank gets the
same value and the same stop decision; rank 0 writes the run directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from gwa.integrations._monitor import EpochMonitor, log_values
from gwa.torch import GWATracker

_TARGET_KEYS = ("targets", "labels", "label", "y")
_ID_KEYS = ("sample_ids", "sample_id", "index", "idx")


def default_batch_to_targets_ids(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(targets, sample_ids or None)`` from ``(x, y)``, ``(x, y, ..., ids)`` or a dict (keys in the module doc)."""
    if isinstance(batch, Mapping):
        targets = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        if targets is None:
            raise ValueError(f"Expected the batch dict to hold the targets under one of {_TARGET_KEYS}; got keys "
                             f"{sorted(map(str, batch))}. Pass `batch_to_targets_ids=`.")
        return targets, next((batch[k] for k in _ID_KEYS if k in batch), None)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1], batch[-1] if len(batch) >= 3 else None
    raise ValueError(f"Expected the batch to be (x, y), (x, y, ..., sample_ids) or a dict; got "
                     f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}"
                     ". Pass `batch_to_targets_ids=`.")


class GWACallback(Callback):
    """Track gradient-weight alignment in a Lightning ``fit``; log it, stop on it, pick the best epoch by it.

    Args:
        head: the classifier head (``nn.Linear`` or its dotted name in the LightningModule); default: found.
        num_samples: dataset size (sample ids in ``[0, N)``); default ``len(train_dataloader.dataset)``.
        batch_to_targets_ids: ``batch -> (targets, sample_ids or None)``; default
            :func:`default_batch_to_targets_ids`.
        monitor: the criterion of :mod:`gwa.experiments.criteria` that picks the best epoch: ``"gwa"`` (gwa's
            default), ``"gwa_paper"`` (the paper's GWA verbatim) or ``"align_mean"``; the first 10% of
            ``max_epochs`` are a warm-up that is never best (the paper's rule).
        patience: stop when the best epoch lies this many epochs (after the warm-up) behind; None: never stop.
        finetune: the paper's fine-tuning rule (first minimum, then the maximum after it).
        restore_best_weights: at the end of ``fit``, load the weights of the best epoch (kept on the CPU and in
            the callback's checkpoint state), whether or not training stopped early.
        run_dir: write a run directory (``gwa report / flag / compare`` read it); needs sample ids.
        run_config, overwrite, labels, noise_mask: see :class:`gwa.integrations.EpochMonitor`.
        signals: per-sample companion signals to store (``loss, margin, p_gold, el2n, pred, correct``).
        bias: include the head bias in the cosine.
        log: log ``gwa``, ``gwa/align_mean``, ``gwa/align_std``, ``gwa/excess_kurtosis``, ``gwa/flagged``.

    Attributes:
        tracker: the :class:`gwa.torch.GWATracker` (after ``fit`` starts); ``tracker.history`` has the summaries.
        rows: per-epoch metric rows (the run directory's ``metrics.jsonl``).
        best_epoch, stopped_epoch: 1-based epochs chosen by the criterion so far and of the stop (or None).
        last_result: the last :class:`gwa.torch.EpochResult`.

    Example:
        >>> trainer = L.Trainer(max_epochs=30, callbacks=[GWACallback(patience=5, restore_best_weights=True)])
        ... # doctest: +SKIP
    """

    def __init__(self, *, head=None, num_samples: int | None = None,
                 batch_to_targets_ids: Callable[[Any], tuple] | None = None, monitor: str = "gwa",
                 patience: int | None = None, finetune: bool = False, restore_best_weights: bool = False, run_dir=None, run_config: dict | None = None,
                 overwrite: bool = False, labels=None, noise_mask=None, signals=(), bias: bool = False,
                 log: bool = True):
        if batch_to_targets_ids is not None and not callable(batch_to_targets_ids):
            raise TypeError(f"Expected `batch_to_targets_ids` to be callable; got {type(batch_to_targets_ids).__name__}.")
        self.monitor = EpochMonitor(monitor=monitor, patience=patience, finetune=finetune,
                                    restore_best_weights=restore_best_weights, run_dir=run_dir,
                                    run_config=run_config, overwrite=overwrite, labels=labels, noise_mask=noise_mask)
        self.head, self.num_samples, self.signals, self.bias, self.log = head, num_samples, signals, bias, log
        self.batch_to_targets_ids = batch_to_targets_ids or default_batch_to_targets_ids
        self.tracker: GWATracker | None = None
        self.last_result = None
        self._pending_tracker: dict | None = None
        self._state_key: str | None = None

    @property
    def state_key(self) -> str:
        # Lightning reads this on every hook call: build it once.
        if self._state_key is None:
            self._state_key = self._generate_state_key(monitor=self.monitor.monitor)
        return self._state_key

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        num_samples = self.num_samples or _dataset_size(trainer)
        if self.tracker is not None:
            self.tracker.remove()
        self.tracker = GWATracker(pl_module, head=self.head, num_samples=num_samples, bias=self.bias,
                                  signals=self.signals)
        if self._pending_tracker is not None:
            self.tracker.load_state_dict(self._pending_tracker)
            self._pending_tracker = None
        self.monitor.start(max_epochs=trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None,
                           num_samples=num_samples, write=trainer.is_global_zero, framework="lightning")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(f"GWACallback expected `training_step` to return a dict with 'loss' and 'logits' (the "
                             f"head's output, (B, C)); got {got}.")
        targets, ids = self.batch_to_targets_ids(batch)
        targets = outputs.get("targets", targets)
        ids = outputs.get("sample_ids", ids)
        if ids is None and self.monitor.run_dir is not None:
            raise ValueError("GWACallback(run_dir=...) stores per-sample scores by sample id, but the batch carries "
                             "no sample ids: return (x, y, sample_ids) from the dataset, a dict with 'sample_ids', "
                             "or pass `batch_to_targets_ids=`.")
        self.tracker.update(outputs["logits"].detach(), targets, sample_ids=ids)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Compute, log and decide here, in one hook: no dependence on the order of callbacks.
        result = self.tracker.end_epoch()
        self.last_result = result
        extra = {"step": int(trainer.global_step), **_scalar_metrics(trainer.callback_metrics)}
        model_state = pl_module.state_dict if self.monitor.restore_best_weights else None
        _, stop = self.monitor.end_epoch(result, extra=extra, model_state=model_state)
        if self.log:
            # The values are already global (merged across ranks); sync_dist averages equal values and keeps
            # Lightning from warning that epoch-level values are not synchronised.
            for name, value in log_values(result.summary).items():
                pl_module.log(name, value, on_step=False, on_epoch=True, prog_bar=name == "gwa", sync_dist=True)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.monitor.finish(pl_module.load_state_dict)

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        tracker = self.tracker.state_dict() if self.tracker is not None else self._pending_tracker
        return {"tracker": tracker, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.monitor.load_state_dict(state_dict["monitor"])
        if self.tracker is not None and state_dict["tracker"] is not None:
            self.tracker.load_state_dict(state_dict["tracker"])
        else:
            self._pending_tracker = state_dict["tracker"]

    # ----------------------------------------------------------------------------------------------- results
    @property
    def rows(self) -> list[dict]:
        return self.monitor.rows

    @property
    def best_epoch(self) -> int | None:
        return self.monitor.best_epoch

    @property
    def stopped_epoch(self) -> int | None:
        return self.monitor.stopped_epoch


def _dataset_size(trainer) -> int | None:
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an IterableDataset without __len__
        return None


def _scalar_metrics(metrics: Mapping) -> dict[str, float]:
    """The trainer's logged scalars (e.g. ``train_loss``, ``val_acc``), without the callback's own keys."""
    out = {}
    for name, value in metrics.items():
        if name in ("gwa", "epoch", "step") or name.startswith("gwa/"):
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1 or isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out
