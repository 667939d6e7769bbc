"""Lightning callback: GWA from the training batches, logged, with a stop rule and best-epoch choice.

Contract with the ``LightningModule`` (nothing to change in the usual one):

- ``training_step`` may return the loss tensor alone: the callback keeps the classifier head's own output of the
  step's forward pass (a forward hook of its own on the head), which is what the tracker scores. A dict with
  ``"logits"`` is used as given; ``"targets"`` and ``"sample_ids"`` in it override what is read from the batch.
- The batch holds the targets and, for per-sample scores, the sample ids (dataset indices): a tuple/list
  ``(x, y)`` or ``(x, y, ..., ids)`` (ids last; :class:`gwa.integrations.WithIndex` appends them to any map-style
  dataset), or a dict with ``"targets"``/``"labels"``/``"label"``/``"y"`` and
  ``"sample_ids"``/``"sample_id"``/``"index"``/``"idx"``. Anything else: pass ``batch_to_targets_ids``.
  Without ids, the moments, GWA, the logged values and the stop decision are the same; only the per-sample
  scores (and with them ``gwa flag`` and the report's sample sections) need ids.
- The head is found by :func:`gwa.torch.find_head` (``head=`` to override); one forward of the module in training
  mode per ``training_step`` (a second forward, e.g. for a consistency loss, needs ``head=`` on a layer only the
  scored pass runs, or the plain tracker).

The callback computes GWA, logs it and decides to stop in the same hook (``on_train_epoch_end``), so the
decision does not depend on the order of callbacks (Lightning PR #16567). Under ``strategy="ddp"`` the moments
are merged exactly across ranks and the per-sample scores are deduplicated by sample id, so every rank gets the
same value and the same stop decision; rank 0 writes the run directory.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback
from torch.utils.hooks import RemovableHandle

import torch
from gwa import policy
from gwa.integrations._callback import MonitoredCallback, dataset_size
from gwa.integrations._collect import is_soft
from gwa.integrations._epoch_values import LOG_KEYS
from gwa.torch import GWATracker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from gwa.integrations._callback import MonitorOptions

_TARGET_KEYS = ("targets", "labels", "label", "y")
_ID_KEYS = ("sample_ids", "sample_id", "index", "idx")


def default_batch_to_targets_ids(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(targets, sample_ids or None)`` from ``(x, y)``, ``(x, y, ..., ids)`` or a dict (keys in the module doc)."""
    if isinstance(batch, Mapping):
        targets = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        if targets is None:
            raise ValueError(
                f"Expected the batch dict to hold the targets under one of {_TARGET_KEYS}; got keys "
                f"{sorted(map(str, batch))}. Pass `batch_to_targets_ids=`."
            )
        return targets, next((batch[k] for k in _ID_KEYS if k in batch), None)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1], batch[-1] if len(batch) >= 3 else None
    raise ValueError(
        f"Expected the batch to be (x, y), (x, y, ..., sample_ids) or a dict; got "
        f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}"
        ". Pass `batch_to_targets_ids=`."
    )


class GWACallback(MonitoredCallback, Callback):
    """Track gradient-weight alignment in a Lightning ``fit``; log it, stop on it, pick the best epoch by it.

    Args:
        head: the classifier head (``nn.Linear`` or its dotted name in the LightningModule); default: found.
        num_samples: dataset size (sample ids in ``[0, N)``); default ``len(train_dataloader.dataset)``.
        batch_to_targets_ids: ``batch -> (targets, sample_ids or None)``; default
            :func:`default_batch_to_targets_ids`.
        monitor: the criterion of :mod:`gwa.policy` that picks the best epoch: ``"gwa"`` (gwa's
            default), ``"gwa_paper"`` (the paper's GWA verbatim) or ``"align_mean"``; the first 10% of
            ``max_epochs`` are a warm-up that is never best (the paper's rule).
        patience: stop when the best epoch lies this many epochs (after the warm-up) behind; None: never stop.
        finetune: the paper's fine-tuning rule (first minimum, then the maximum after it).
        restore_best_weights: at the end of ``fit``, load the weights of the best epoch (kept on the CPU and in
            the callback's checkpoint state), whether or not training stopped early.
        run_dir: write a run directory (``gwa report / flag / compare`` read it): metrics, the labels seen with
            each sample id (unless ``labels=`` is given), per-sample scores and signals (with sample ids), inputs
            of some samples for thumbnails (float inputs), and each criterion's epoch at the end.
        run_config, overwrite, labels, noise_mask: see :class:`gwa.integrations.EpochMonitor`.
        signals: per-sample companion signals to store (``loss, margin, p_gold, el2n, pred, correct``); default
            ``("loss", "pred", "correct")`` with ``run_dir`` (the report's predictions, training loss and
            accuracy), else none.
        bias: include the head bias in the cosine.
        veto: the tiny-split veto (see :class:`gwa.integrations.EpochMonitor`): ``True`` reads the accuracy on a
            small noisy split held out of training from the metric ``veto_acc`` (log it in your
            ``validation_step`` on that split: ``self.log("veto_acc", acc)``); or a callable
            ``veto(pl_module) -> accuracy``. False (default): no veto.
        log: log ``gwa`` (the default criterion's value, NaN in the warm-up: ``ModelCheckpoint(monitor="gwa",
            mode="max")`` keeps gwa's own best epoch), ``gwa_paper`` (the paper's value verbatim),
            ``gwa_paper_flagged``, ``align_mean``, ``align_std``, ``align_excess_kurtosis`` (the names of
            ``metrics.jsonl``).

    Attributes:
        tracker: the :class:`gwa.torch.GWATracker` (after ``fit`` starts); ``tracker.history`` has the summaries.
        rows: per-epoch metric rows (the run directory's ``metrics.jsonl``).
        best_epoch, stopped_epoch: 1-based epochs chosen by the criterion so far and of the stop (or None).
        last_result: the last :class:`gwa.torch.EpochResult`.
        diagnostics: after training, why not to trust the best epoch (:func:`gwa.policy.diagnose`); each is also
            warned (``RuntimeWarning``) on rank 0 and written to the run directory's summary.json.
        summary: after training, the run's :class:`gwa.rundir.RunSummary` (summary.json's content).

    Example:
        >>> trainer = L.Trainer(max_epochs=30, callbacks=[GWACallback(patience=5, restore_best_weights=True)])
        ... # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        head=None,
        num_samples: int | None = None,
        batch_to_targets_ids: Callable[[Any], tuple] | None = None,
        signals=None,
        bias: bool = False,
        log: bool = True,
        veto=False,
        **options: Unpack[MonitorOptions],
    ):
        if batch_to_targets_ids is not None and not callable(batch_to_targets_ids):
            raise TypeError(
                f"Expected `batch_to_targets_ids` to be callable; got {type(batch_to_targets_ids).__name__}."
            )
        self._init_callback(
            "GWACallback",
            head=head,
            num_samples=num_samples,
            signals=signals,
            bias=bias,
            veto=veto,
            options=dict(options),
        )
        self.log = log
        self.batch_to_targets_ids = batch_to_targets_ids or default_batch_to_targets_ids
        self._head_handle: RemovableHandle | None = None
        self._head_output: torch.Tensor | None = None
        self._epoch_without_ids = False
        self._checked_smoothing = False
        self._state_key: str | None = None

    @property
    def state_key(self) -> str:
        # Lightning reads this on every hook call: build it once.
        if self._state_key is None:
            self._state_key = self._generate_state_key(monitor=self.monitor.monitor)
        return self._state_key

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        _check_early_stopping(trainer)
        num_samples = self.num_samples or dataset_size(trainer.train_dataloader)
        self._remove_hooks()
        tracker = GWATracker(
            pl_module,
            head=self.head,
            num_samples=num_samples,
            bias=self.bias,
            signals=self.signals,
            label_smoothing=_label_smoothing(pl_module),
        )
        # The head's own output of the step's forward: what the tracker pairs its capture with, by identity.
        assert tracker.head is not None  # a tracker built on the module has found its head
        self._head_handle = tracker.head.register_forward_hook(self._keep_head_output)
        self._checked_smoothing = False
        self._start(
            tracker,
            num_samples=num_samples,
            max_epochs=trainer.max_epochs,
            main=trainer.is_global_zero,
            facts=_run_facts(trainer, pl_module, tracker),
            framework="lightning",
        )

    def _keep_head_output(self, module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled() and isinstance(output, torch.Tensor):
            self._head_output = output

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        head_output, self._head_output = self._head_output, None  # never keep a step's graph alive longer
        if outputs is None:  # training_step returned None: Lightning skipped the step
            return
        assert self.tracker is not None  # on_train_start built it
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            logits = head_output
        if logits is None:
            raise RuntimeError(
                f"GWACallback: the head {self.tracker.head_name!r} did not run in training mode with "
                "autograd during this training_step, so there are no logits to score. Run the "
                "forward in training_step (not under torch.no_grad()), pass `head=` the layer that "
                "produces the logits, or return {'loss': loss, 'logits': logits}."
            )
        targets, ids = self.batch_to_targets_ids(batch)
        batch_targets = targets  # the dataset's labels, before a training_step's mixup replaces them
        if isinstance(outputs, Mapping):
            targets = outputs.get("targets", targets)
            ids = outputs.get("sample_ids", ids)
        if not self._checked_smoothing:
            self._checked_smoothing = True
            _warn_if_smoothing_ignored(pl_module, targets)
        if ids is None:
            self._epoch_without_ids = True
            with warnings.catch_warnings():  # said once, in the callback's own words, at the end of the epoch
                warnings.filterwarnings("ignore", message="gwa: update\\(\\) got no sample_ids")
                self.tracker.update(logits, targets)
            return
        self.tracker.update(logits, targets, sample_ids=ids)
        if self._labels is not None:
            self._labels.observe(batch_targets, ids)  # soft (mixed in the collate function): skipped
        if self._previews is not None and not is_soft(batch_targets):  # soft batch targets: mixed inputs
            x = batch[0] if isinstance(batch, (tuple, list)) and batch else None
            self._previews.observe(x, ids)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Compute, log and decide here, in one hook: no dependence on the order of callbacks.
        without_ids, self._epoch_without_ids = self._epoch_without_ids, False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="gwa: update\\(\\) got no sample_ids under")
            assert self.tracker is not None  # on_train_start built it
            result = self.tracker.end_epoch()
        self.last_result = result
        if without_ids and self.monitor.run_dir is not None and result.epoch == 1:
            warnings.warn(
                "GWACallback: the batches carry no sample ids, so the run directory gets the metrics of "
                "every epoch but no per-sample scores (gwa flag and the report's sample sections need "
                "them). Wrap the dataset: gwa.integrations.WithIndex(train_set) yields (x, y, index).",
                UserWarning,
                stacklevel=2,
            )
        if without_ids:
            result = dataclasses.replace(result, scores=None)
        extra = {"step": int(trainer.global_step), **_scalar_metrics(trainer.callback_metrics)}
        model_state = pl_module.state_dict if self.monitor.restore_best_weights else None
        stop = self._record_epoch(
            result, extra=extra, model_state=model_state, model=pl_module, per_sample=not without_ids
        )
        if self.log:
            # The values are already global (merged across ranks); sync_dist averages equal values and keeps
            # Lightning from warning that epoch-level values are not synchronised.
            for name, value in self.monitor.log_values(result.summary, result.epoch).items():
                pl_module.log(
                    name, value, on_step=False, on_epoch=True, prog_bar=name == "gwa", sync_dist=True
                )
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish_run(pl_module.load_state_dict, main=trainer.is_global_zero)
        self._remove_hooks(keep_tracker=True)

    def _remove_hooks(self, keep_tracker: bool = False) -> None:
        if self._head_handle is not None:
            self._head_handle.remove()
            self._head_handle = None
        self._head_output = None
        if self.tracker is not None and not keep_tracker:
            self.tracker.remove()


def _scalar_metrics(metrics: Mapping) -> dict[str, float]:
    """The trainer's logged scalars (e.g. ``train_loss``, ``val_acc``), without the callback's own keys."""
    out = {}
    for name, value in metrics.items():
        if name in LOG_KEYS or name in ("epoch", "step"):
            continue
        if (isinstance(value, torch.Tensor) and value.numel() == 1) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            out[name] = float(value)
    return out


def _run_facts(trainer, pl_module, tracker) -> dict:
    """What the report's run table shows for a Lightning run: model, head, optimizer, batch size, devices."""
    facts = {
        "model": type(pl_module).__name__,
        "head": tracker.head_name,
        "head_shape": list(tracker.head.weight.shape),
        "world_size": int(trainer.world_size),
    }
    optimizers = getattr(trainer, "optimizers", None) or []
    if optimizers:
        facts["optimizer"] = type(optimizers[0]).__name__
        facts["lr"] = optimizers[0].param_groups[0].get("lr")
    batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if isinstance(batch_size, int):
        facts["batch_size"] = batch_size
    return facts


def _label_smoothing(module: torch.nn.Module) -> float:
    """The label smoothing of a ``CrossEntropyLoss`` the module holds (as a submodule or attribute), else 0."""
    losses = [m for m in module.modules() if isinstance(m, torch.nn.CrossEntropyLoss)]
    losses += [v for v in vars(module).values() if isinstance(v, torch.nn.CrossEntropyLoss)]
    return max((float(loss.label_smoothing) for loss in losses), default=0.0)


def _warn_if_smoothing_ignored(module, targets) -> None:
    """Warn when the scored targets look like the loss's smoothed distribution (every entry >= eps / C)."""
    smoothing = _label_smoothing(module)
    if smoothing <= 0 or not isinstance(targets, torch.Tensor) or targets.dim() != 2:
        return
    if bool((targets.detach() >= (1 - 1e-3) * smoothing / targets.shape[1]).all()):
        warnings.warn(
            f"GWACallback: the module's CrossEntropyLoss has label_smoothing={smoothing:g} and the targets "
            "scored look smoothed (every entry >= eps / C). Score what the loss is given (class ids, or mixup "
            "rows before smoothing): against the smoothed distribution the stop choice and the flags were "
            "worse (docs/soft-targets.md).",
            UserWarning,
            stacklevel=3,
        )


def _check_early_stopping(trainer) -> None:
    """Refuse Lightning's ``EarlyStopping(monitor="gwa")`` in a form that would stop in gwa's warm-up.

    ``gwa`` is logged as NaN in the warm-up (the first 10% of ``max_epochs``): with ``check_finite=True`` (its
    default) EarlyStopping would stop at epoch 1, and with a patience within the warm-up it would stop before
    any epoch can be chosen.
    """
    from lightning.pytorch.callbacks import EarlyStopping

    total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    warmup = policy.warmup_epochs(total) if total else 0
    for cb in trainer.callbacks:
        if not isinstance(cb, EarlyStopping) or cb.monitor != "gwa" or warmup == 0:
            continue
        if cb.check_finite:
            raise ValueError(
                f"EarlyStopping(monitor='gwa') needs check_finite=False: gwa is NaN in the warm-up "
                f"(epochs 1-{warmup} of {total}), which gwa never chooses. Or stop with "
                "GWACallback(patience=...) instead."
            )
        if cb.patience <= warmup:
            raise ValueError(
                f"EarlyStopping(monitor='gwa') needs patience > {warmup}, the warm-up epochs of "
                f"max_epochs={total}; got patience={cb.patience}."
            )
