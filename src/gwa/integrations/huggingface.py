"""Hugging Face ``Trainer`` callback: GWA of a sequence-classification model, logged, with a stop rule.

No ``TrainerCallback`` event receives the logits or the labels, so the callback adds two hooks to the model when
training begins (the ``Trainer`` is used as is, no subclass):

- a forward pre-hook that reads ``labels`` and *removes* the sample-id column (``id_key``) from the model's
  keyword arguments, so the model never sees it;
- a forward hook on the head (``score``, ``classifier`` or ``classifier.out_proj``, found by
  :func:`gwa.torch.find_head`) that keeps its input and weights, and a forward hook on the model that, in
  training mode, passes ``output.logits``, the labels, the ids, the head input and the weights (still those of
  this forward pass) to a :class:`gwa.torch.GWATracker`. Decoder-style ``score`` heads (GPT-2, Llama, ...) run on
  every token and the model pools the logits of the last non-padding token; the head input of that token is
  taken (``config.pad_token_id`` as the model does), and checked against the pooled logits.

Sample ids: the ``Trainer`` drops dataset columns the model's ``forward`` does not name
(``remove_unused_columns=True``). Keep an integer column ``id_key`` (default ``"sample_id"``, the dataset index)
and set ``TrainingArguments(remove_unused_columns=False)``; a ``datasets.Dataset`` then needs only the model's
columns plus the id (``gwa.integrations.WithIndex(ds)`` adds it to each dict item; with ``datasets``:
``ds = ds.add_column("sample_id", range(len(ds)))``). Without ids the scores are stored by
position (the paper's behaviour) and ``run_dir`` is refused.

Keeping the best model without an eval set: with ``restore_best_weights=True`` the callback saves the weights of
each new best epoch with ``model.save_pretrained`` (and the tokenizer or processor the ``Trainer`` holds) into
``output_dir/gwa-best`` (``best_model_dir=`` to choose), and loads the best weights into the model at the end of
``train()``. HF's own ``load_best_model_at_end``/``metric_for_best_model`` need an eval set; they are not needed.

State: the callback's state (tracker, stop rule, best weights) is written as ``gwa_callback_rank<k>.pt`` into
each checkpoint folder in ``on_save`` and read back in ``on_train_begin`` of a resumed run
(``output_dir/checkpoint-<global_step>``, or a folder given to :meth:`GWATrainerCallback.load_checkpoint`).
``ExportableState`` is not used: on resume the ``Trainer`` replaces such a callback by a new instance built
from JSON arguments, which would leave the user's reference stale and the old hooks on the model.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import torch
from gwa.integrations._callback import MonitoredCallback, dataset_size
from gwa.integrations._collect import is_soft
from gwa.integrations._hf_files import BEST_DIR, STATE_FILE, read_state, save_best_model, write_state
from gwa.torch import GWATracker, find_head

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from gwa.integrations._callback import MonitorOptions


class GWATrainerCallback(MonitoredCallback, TrainerCallback):
    """Track gradient-weight alignment in ``Trainer.train``; log it, stop on it, pick the best epoch by it.

    Args:
        head: the classifier head (``nn.Linear`` or its dotted name in the model); default: found.
        id_key: the batch key holding sample ids (popped before the model's forward).
        num_samples: dataset size; default ``len(train_dataloader.dataset)``.
        monitor, patience, finetune, restore_best_weights, run_dir, run_config, overwrite, labels, noise_mask: as
            in :class:`gwa.integrations.lightning.GWACallback` (the warm-up is the first 10% of
            ``num_train_epochs``).
        signals: per-sample companion signals to store (``loss, margin, p_gold, el2n, pred, correct``); default
            ``("loss", "pred", "correct")`` with ``run_dir``, else none.
        bias: include the head bias in the cosine.
        veto: the tiny-split veto (see :class:`gwa.integrations.EpochMonitor`): a callable ``veto(model) ->
            accuracy`` on a small noisy split held out of training, called at each epoch's end (the Trainer's own
            evaluation comes after that hook). None (default): no veto.
        best_model_dir: where to save the best epoch's model (``save_pretrained``) as training goes; default
            ``output_dir/gwa-best`` when ``restore_best_weights=True``, else not saved. False: never save.

    With ``run_dir``, the run directory also gets the labels seen with each sample id (unless ``labels=``), the
    per-sample signals, a few ``pixel_values`` inputs for the report's thumbnails (image models), and facts for the
    report's run table (model class, head, learning rate, batch size, seed).

    Logged (through ``on_log``, into ``state.log_history`` and every reporting callback, TensorBoard, W&B, ...,
    wherever this callback sits in the list): ``gwa``, ``gwa_paper``, ``gwa_paper_flagged``, ``align_mean``,
    ``align_std``, ``align_excess_kurtosis`` (the names of ``metrics.jsonl``).

    After training, :attr:`diagnostics` says why not to trust the best epoch (:func:`gwa.policy.diagnose`); each is
    also warned (``RuntimeWarning``) on the main process and written to the run directory's summary.json.

    Example:
        >>> cb = GWATrainerCallback(patience=3, restore_best_weights=True)  # doctest: +SKIP
        >>> Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()
    """

    def __init__(
        self,
        *,
        head=None,
        id_key: str = "sample_id",
        num_samples: int | None = None,
        signals=None,
        bias: bool = False,
        best_model_dir=None,
        veto=None,
        **options: Unpack[MonitorOptions],
    ):
        if veto is not None and not callable(veto):
            raise TypeError(
                f"Expected `veto` to be None or a callable veto(model) -> accuracy on the split; got {veto!r} "
                "(the Trainer evaluates after on_epoch_end, so a logged metric would come an epoch late)."
            )
        if not isinstance(id_key, str):
            raise TypeError(f"Expected `id_key` to be a str; got {type(id_key).__name__}.")
        if best_model_dir is True or not (
            best_model_dir is None or best_model_dir is False or isinstance(best_model_dir, (str, Path))
        ):
            raise TypeError(f"Expected `best_model_dir` to be a path, None or False; got {best_model_dir!r}.")
        self._init_callback(
            "GWATrainerCallback",
            head=head,
            num_samples=num_samples,
            signals=signals,
            bias=bias,
            veto=veto if veto is not None else False,
            options=dict(options),
        )
        self.id_key = id_key
        self._handles: list = []
        self.head_name: str | None = None
        self._head_input = None
        self._ids = None
        self._to_log: dict | None = None
        self._last_values: dict[str, float] = {}
        self._resume_from: Path | None = None
        self._best_model_dir = best_model_dir
        #: The folder holding the best epoch's model (``from_pretrained`` reads it), once one was saved.
        self.best_model_dir: Path | None = None
        self._inputs = None

    # ------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.remove()
        if getattr(args, "label_smoothing_factor", 0) > 0:
            raise ValueError(
                f"GWATrainerCallback: TrainingArguments(label_smoothing_factor={args.label_smoothing_factor}) makes "
                "the Trainer take `labels` out of the batch before the model's forward, so the callback cannot see "
                "the targets. Keep label_smoothing_factor=0 and smooth in a Trainer subclass whose compute_loss "
                "passes `labels` on to the model (the callback then scores the hard labels, which measured better "
                "than the smoothed targets): see docs/soft-targets.md."
            )
        num_samples = self.num_samples or dataset_size(train_dataloader)
        self.head_name, head = find_head(model, self.head)
        if self.bias and head.bias is None:
            raise ValueError(
                f"Expected the head {self.head_name!r} to have a bias because bias=True; it has none."
            )
        # Explicit path (embeddings= and weight= in update): the head input may need pooling (see the module doc).
        tracker = GWATracker(None, num_samples=num_samples, bias=self.bias, signals=self.signals)
        self.tracker = tracker  # built before a resumed state loads into it
        self._handles = [
            model.register_forward_pre_hook(self._take_ids, with_kwargs=True),
            head.register_forward_hook(self._take_head_input),
            model.register_forward_hook(self._score, with_kwargs=True),
        ]
        if state.global_step > 0:  # resumed from a checkpoint
            folder = (
                self._resume_from or Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            )
            path = folder / STATE_FILE.format(rank=args.process_index)
            if not path.exists():
                raise FileNotFoundError(
                    f"GWATrainerCallback: training resumes at step {state.global_step} but {path} does not exist, so "
                    "the alignment state of the interrupted run is unknown. Call callback.load_checkpoint(<the "
                    "checkpoint folder>) before trainer.train(resume_from_checkpoint=...)."
                )
            self.load_state_dict(read_state(path))
        facts = {
            "model": type(model).__name__,
            "head": self.head_name,
            "head_shape": list(head.weight.shape),
            "optimizer": str(getattr(args, "optim", "")) or None,
            "lr": args.learning_rate,
            "batch_size": args.per_device_train_batch_size * max(1, args.world_size),
            "seed": args.seed,
            "world_size": args.world_size,
        }
        self._start(
            tracker,
            num_samples=num_samples,
            max_epochs=math.ceil(state.num_train_epochs) if state.num_train_epochs else None,
            main=state.is_world_process_zero,
            facts=facts,
            framework="huggingface",
        )

    def _take_ids(self, module, args, kwargs):
        self._ids = kwargs.pop(self.id_key, None)
        self._inputs = kwargs.get("pixel_values")  # image models: inputs for the report's thumbnails
        self._head_input = None
        return args, kwargs

    def _take_head_input(self, module, inputs, output):
        if module.training:
            self._head_input = (inputs[0], module.weight, module.bias)

    def _score(self, module, args, kwargs, output):
        if not module.training:
            return
        labels = kwargs.get("labels")
        if labels is None:
            raise RuntimeError(
                "GWATrainerCallback found no `labels` in the model's forward arguments (a label "
                "smoother or compute_loss_func pops them before the forward); GWA needs them."
            )
        if self._ids is None and self.monitor.run_dir is not None:
            raise ValueError(
                f"GWATrainerCallback(run_dir=...) stores per-sample scores by sample id, but the batch "
                f"has no {self.id_key!r} column: add it to the dataset and set "
                "TrainingArguments(remove_unused_columns=False)."
            )
        logits = output["logits"] if isinstance(output, dict) or hasattr(output, "keys") else output[0]
        if self._head_input is None:
            raise RuntimeError(
                f"GWATrainerCallback: the head {self.head_name!r} did not run in this training "
                "forward; pass `head=` the layer that produces the logits."
            )
        x, weight, bias = self._head_input
        self._head_input = None
        if x.dim() == 3:
            x = _pooled_head_input(module, x, logits, weight, bias, args, kwargs, self.head_name)
        device = logits.device.type
        # Inside the model's forward: the weights are still those of this pass; score outside autocast.
        with torch.autocast(device_type=device, enabled=False):
            self.tracker.update(
                logits.detach(),
                labels,
                sample_ids=self._ids,
                embeddings=x.detach(),
                weight=weight.detach(),
                bias=None if bias is None or not self.bias else bias.detach(),
            )
        if self._labels is not None:
            self._labels.observe(labels, self._ids)
        if self._previews is not None and not is_soft(labels):  # soft labels: the collator may have mixed
            self._previews.observe(self._inputs, self._ids)
        self._inputs = None

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        result = self.tracker.end_epoch()
        self.last_result = result
        model_state = model.state_dict if self.monitor.restore_best_weights else None
        stop = self._record_epoch(
            result, extra={"step": int(state.global_step)}, model_state=model_state, model=model
        )
        if self.monitor.best_epoch == result.epoch and state.is_world_process_zero:
            self._save_best(
                args, model, result.epoch, kwargs.get("processing_class") or kwargs.get("tokenizer")
            )
        values = self.monitor.log_values(result.summary, result.epoch)
        self._last_values = values
        if args.logging_strategy == "no":  # no on_log will come: record in the history directly
            state.log_history.append({"epoch": state.epoch, "step": state.global_step, **values})
        else:
            self._to_log = values
            control.should_log = True
        if stop:
            control.should_training_stop = True  # our own decision, not EarlyStoppingCallback's eval-only one
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # The Trainer ranks checkpoints by metrics["eval_<metric_for_best_model>"]; hand it the last epoch's gwa
        # values (NaN in the warm-up, never "greater"), so metric_for_best_model="gwa" keeps gwa's own choice.
        if metrics is not None and self._last_values:
            metrics.update(
                {f"eval_{k}": v for k, v in self._last_values.items() if k in ("gwa", "gwa_paper")}
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._to_log is not None and logs is not None:
            logs.update(self._to_log)
            # Trainer.log appended a copy of `logs` (plus "step") to the history before this event.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(self._to_log)
            # The reporting callbacks (TensorBoard, W&B, ...) come before the user's in the Trainer's list, so
            # they saw this log without gwa's values: hand these to them, and the callback's position is free.
            for reporter in _reporters_before(self):
                reporter.on_log(args, state, control, logs=dict(self._to_log), **kwargs)
            self._to_log = None

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            write_state(folder / STATE_FILE.format(rank=args.process_index), self.state_dict())

    def on_train_end(self, args, state, control, model=None, **kwargs):
        best = None if self.best_model_dir is None else str(self.best_model_dir)
        self._finish_run(
            model.load_state_dict, main=state.is_world_process_zero, summary={"best_model_dir": best}
        )

    def _save_best(self, args, model, epoch: int, processor) -> None:
        """Save the model of the new best epoch with ``save_pretrained`` (replacing the previous best)."""
        if self._best_model_dir is False or (
            self._best_model_dir is None and not self.monitor.restore_best_weights
        ):
            return
        folder = Path(self._best_model_dir) if self._best_model_dir else Path(args.output_dir) / BEST_DIR
        value = self.monitor.stopper.best_value
        save_best_model(folder, model, processor, epoch=epoch, monitor=self.monitor.monitor, value=value)
        self.best_model_dir = folder

    # ------------------------------------------------------------------------------------------------- state
    def load_checkpoint(self, folder) -> None:
        """Read the state from this checkpoint folder when training resumes (for non-default layouts)."""
        self._resume_from = Path(folder)

    def _hold_tracker_state(self, state: dict | None) -> None:
        # Refused, not kept: a resumed train() reads the tracker's state from the checkpoint folder itself.
        if state is not None:
            raise ValueError(
                "Expected the callback's tracker to be built (on_train_begin builds it) before loading "
                "a tracker state; got tracker=None."
            )

    def remove(self) -> None:
        """Remove the hooks from the model (done again at the next ``train()``)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.tracker is not None:
            self.tracker.remove()


def _reporters_before(callback) -> list:
    """The Trainer's reporting callbacks (``report_to``: TensorBoard, W&B, ...) that received the current
    ``on_log`` before ``callback``; none when they cannot be found.

    Why frame inspection: the ``Trainer`` puts the reporting callbacks before the user's, builds the logged values
    inside ``Trainer.log`` and hands them to every callback in turn. No event hands a callback the ``Trainer`` or
    its ``CallbackHandler`` (``call_event`` passes ``model``, ``processing_class``, ``optimizer``,
    ``lr_scheduler`` and the dataloaders), and no event comes between the values being built and the first
    ``on_log``. So the callback list is read from the ``CallbackHandler.call_event`` frame dispatching this
    ``on_log``. If transformers changes that dispatch, the reporters before ``callback`` stop getting gwa's values
    (those after it still do): ``test_reporters_before_the_callback_get_its_values`` fails then.
    """
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(4):  # on_log <- CallbackHandler.call_event (<- on_log)
        frame = frame.f_back if frame is not None else None
        if frame is None:
            return []
        callbacks = getattr(frame.f_locals.get("self"), "callbacks", None)
        if isinstance(callbacks, list) and any(cb is callback for cb in callbacks):
            before = callbacks[: next(i for i, cb in enumerate(callbacks) if cb is callback)]
            return [cb for cb in before if isinstance(cb, tuple(INTEGRATION_TO_CALLBACK.values()))]
    return []


def _pooled_head_input(model, x, logits, weight, bias, args, kwargs, head_name) -> torch.Tensor:
    """``(B, D)`` head input of the token whose logits the model pooled: the last non-padding one."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    batch, length = x.shape[:2]
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    if pad is None or input_ids is None:
        last = torch.full((batch,), length - 1, device=x.device)
    else:
        non_pad = (input_ids != pad).to(x.device, torch.int32)
        last = (torch.arange(length, device=x.device, dtype=torch.int32) * non_pad).argmax(-1)
    pooled = x[torch.arange(batch, device=x.device), last]
    if pooled.dtype in (torch.float32, torch.float64) and logits.dtype == pooled.dtype:
        with torch.no_grad():
            expected = torch.nn.functional.linear(pooled, weight, bias)
        if not torch.allclose(expected, logits.detach(), rtol=1e-4, atol=1e-5):
            raise ValueError(
                f"GWATrainerCallback: the head {head_name!r} gets (B, T, D) inputs and the model's "
                "logits are not those of the last non-padding token; this pooling is not supported."
            )
    return pooled
