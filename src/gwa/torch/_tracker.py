"""GWATracker: per-epoch gradient-weight alignment of a torch model, captured at forward time.

A forward hook on the classifier head takes, while the head is in training mode, what the cosine needs from
the head with the weights *of that forward pass* (``W x``, ``||x||``, ``||W||_F``); :meth:`GWATracker.update`
then needs only the logits and the targets, so its scores are the same before or after ``optimizer.step()``.
Scores, moments and per-sample stores stay on the device; the host reads them once per epoch.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from gwa._moments import Moments, batch_state
from gwa._summary import MIN_DENOMINATOR, PAPER_BETA, EpochSummary, summarize
from gwa._validation import check_positive, check_shapes, describe
from gwa.torch import _distributed
from gwa.torch._accumulate import EpochSums, SampleStore, first_occurrence
from gwa.torch._head import find_head
from gwa.torch._kernel import HeadTerms, compute_dtype, head_terms, scores_from_head_terms
from gwa.torch._signals import check_signal_names, compute_signals


def _dead_ref():
    return None


#: Forward passes captured but not yet consumed by ``update`` beyond which the oldest is dropped (with a warning).
MAX_PENDING_CAPTURES = 64


@dataclass
class EpochResult:
    """What :meth:`GWATracker.end_epoch` returns.

    Attributes:
        epoch: 1-based epoch number.
        summary: the epoch's :class:`gwa.EpochSummary` (GWA, moments, guard, ``n_undefined``).
        scores: float32 per-sample scores; ``(num_samples,)`` indexed by sample id with NaN where unseen when
            the tracker has ``num_samples``, else aligned with :attr:`sample_ids`. None if not stored.
        sample_ids: int64 ids of :attr:`scores` when the tracker has no ``num_samples`` (sorted, unique), else None.
        signals: companion per-sample signals, same layout as :attr:`scores`.
        n_duplicates: occurrences of an already-seen sample id in the epoch (counted once, not again).
        n_non_finite: samples skipped because their logits, embeddings or soft targets were NaN/Inf.
    """

    epoch: int
    summary: EpochSummary
    scores: np.ndarray | None
    sample_ids: np.ndarray | None = None
    signals: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    n_duplicates: int = 0
    n_non_finite: int = 0


class _Capture(NamedTuple):
    output: weakref.ref  # the head's output, to pair update(logits) with its own forward pass when it is that
    terms: HeadTerms | None
    embeddings_shape: tuple
    weight_shape: tuple
    bias_shape: tuple | None
    error: Exception | None


class GWATracker:
    """Track per-sample alignment scores and the per-epoch GWA of a classifier during training.

    Args:
        model: the network; its classifier head is found by :func:`gwa.torch.find_head` and hooked. None for
            the explicit path (pass ``embeddings=`` and ``weight=`` to :meth:`update`).
        head: override the head (an ``nn.Linear`` or its dotted name in ``model``).
        num_samples: dataset size: scores are stored in a device tensor indexed by sample id (ids must be in
            ``[0, num_samples)``) and duplicates are detected on device. None: ids and scores are kept in chunks.
        bias: include the head bias in the cosine (the paper leaves it out).
        signals: companion per-sample signals to store, among ``loss, margin, p_gold, el2n, pred, correct``.
        store_scores: keep per-sample scores (and signals); False keeps only the epoch's moments.
        min_denominator: the summary's guard threshold on ``excess_kurtosis + beta``.
        beta: the paper's beta.
        process_group: the ``torch.distributed`` group to reduce over at ``end_epoch`` (default: the world
            when ``torch.distributed`` is initialised).

    The forward hook captures only forward passes of the head in training mode with autograd enabled, so
    evaluation, teacher and ``no_grad`` forwards are ignored. Each :meth:`update` consumes one capture: the one
    whose output is the given ``logits`` if it is still pending, else the oldest.

    Everything stays on the device during the epoch. The epoch's moments are exact: with ``num_samples`` they
    are taken at ``end_epoch`` from the deduplicated per-sample store; without it, from the stored chunks (first
    sighting of each id); with ``store_scores=False`` and no ``num_samples``, from float64 shifted power sums
    accumulated on device (float32 on mps), where repeated ids cannot be recognised.

    NaN/Inf in the logits, embeddings, head or soft targets is detected on device: those samples get NaN
    scores, are left out of the moments and the store, and are counted in :attr:`EpochResult.n_non_finite`
    (with a ``RuntimeWarning`` at ``end_epoch``), so they cannot poison the epoch silently.

    Example:
        >>> import torch, gwa.torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> with gwa.torch.GWATracker(model, num_samples=6) as tracker:
        ...     logits = model(torch.randn(6, 4))
        ...     scores = tracker.update(logits, torch.tensor([0, 1, 2, 0, 1, 2]), sample_ids=torch.arange(6))
        ...     result = tracker.end_epoch()
        >>> result.epoch, result.summary.n, result.scores.shape
        (1, 6, (6,))
    """

    def __init__(self, model: nn.Module | None = None, *, head: nn.Module | str | None = None,
                 num_samples: int | None = None, bias: bool = False, signals=(), store_scores: bool = True,
                 min_denominator: float = MIN_DENOMINATOR, beta: float = PAPER_BETA, process_group=None):
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                        or num_samples <= 0):
            raise ValueError(f"Expected `num_samples` to be a positive int or None; got {num_samples!r}.")
        self.num_samples = num_samples
        self.bias = bool(bias)
        self.signals = check_signal_names(signals)
        self.store_scores = bool(store_scores)
        self.min_denominator = float(min_denominator)
        self.beta = check_positive("beta", beta)
        self.process_group = process_group
        self.history: list[EpochSummary] = []
        self.epoch = 0  # completed epochs
        self.head_name: str | None = None
        self.head: nn.Linear | None = None
        self._handle = None
        self._captures: deque[_Capture] = deque()
        self._warned = set()
        if model is None and head is not None:
            model = head if isinstance(head, nn.Module) else None
            if model is None:
                raise ValueError("Expected `model` when `head` is given by name; got model=None.")
        if model is not None:
            self.head_name, self.head = find_head(model, head)
            if self.bias and self.head.bias is None:
                raise ValueError(f"Expected the head {self.head_name!r} to have a bias because bias=True; "
                                 "it has none.")
            self._handle = self.head.register_forward_hook(self._capture)
        # store: device tensors indexed by id; chunks: (ids, scores) per batch; moments: power sums only.
        self._mode = "store" if num_samples is not None else "chunks" if self.store_scores else "moments"
        self._device: torch.device | None = None
        self._pending_state: dict | None = None
        self._reset_epoch()

    # ----------------------------------------------------------------------------------------------------- hook
    def _capture(self, module: nn.Linear, inputs, output) -> None:
        # Training forwards run with autograd; eval-mode and no_grad forwards (teacher, EMA, scoring) are skipped.
        if not module.training or not torch.is_grad_enabled():
            return
        x = inputs[0] if inputs else None
        bias = module.bias if self.bias else None
        error = terms = None
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            error = ValueError(f"Expected the head {self.head_name!r} to receive embeddings of shape (N, D); got "
                               f"{describe(x)}. Flatten the sequence dimension or pass embeddings= to update().")
        elif torch.is_autocast_enabled(x.device.type):
            # Autocast would run W x in half precision; the score is computed in float32/float64.
            with torch.autocast(device_type=x.device.type, enabled=False):
                terms = head_terms(x, module.weight, bias, dtype=compute_dtype(x, module.weight))
        else:
            terms = head_terms(x, module.weight, bias, dtype=compute_dtype(x, module.weight))
        if len(self._captures) >= MAX_PENDING_CAPTURES:
            self._captures.popleft()
            self._warn_once("overflow", f"{MAX_PENDING_CAPTURES} forward passes of the head in training mode were "
                            "captured without update(); dropping the oldest. Call update() once per forward, or "
                            "put the model in eval mode for forwards that are not training steps.")
        ref = weakref.ref(output) if isinstance(output, torch.Tensor) else _dead_ref
        self._captures.append(_Capture(ref, terms, tuple(getattr(x, "shape", ())), tuple(module.weight.shape),
                                       None if bias is None else tuple(bias.shape), error))

    # --------------------------------------------------------------------------------------------------- update
    def update(self, logits: torch.Tensor, targets: torch.Tensor, sample_ids=None, *,
               embeddings: torch.Tensor | None = None, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """Score one batch and add it to the epoch. No host synchronisation.

        Call once per forward pass of the model in training mode (with gradient accumulation: once per
        micro-batch, in order), before or after ``optimizer.step()``: the head's weights were captured at
        forward time.

        Args:
            logits: ``(B, C)`` logits of that forward pass (bf16/fp16 are upcast).
            targets: ``(B,)`` class ids or ``(B, C)`` probabilities.
            sample_ids: ``(B,)`` integer dataset indices of the samples (tensor, array or list). None: running
                positions within the epoch are used (the paper's behaviour; warned once when scores are stored).
            embeddings: ``(B, D)`` head inputs, for the explicit path without a hook (with ``weight``).
            weight: ``(C, D)`` head weight used in the forward pass that produced ``logits``.
            bias: ``(C,)`` head bias (explicit path with ``bias=True``).

        Returns:
            ``(B,)`` detached scores on the logits' device; NaN for samples with NaN/Inf inputs.

        Raises:
            RuntimeError: when no forward pass of the head in training mode is waiting to be consumed.
            ValueError: on mismatched shapes (e.g. a batch size different from the captured forward pass) or
                class ids / sample ids out of range (on CPU at once; on accelerators as a device assert).
            TypeError: on non-tensor logits or targets of the wrong dtype.
        """
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"Expected `logits` to be a torch.Tensor; got {type(logits).__name__}.")
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"Expected `targets` to be a torch.Tensor; got {type(targets).__name__}.")
        # Type checks first, so that a rejected call leaves its capture for the corrected call.
        soft = targets.dim() == 2
        if soft and not targets.is_floating_point():
            raise TypeError(f"Expected soft `targets` (B, C) to be floating point; got {describe(targets)}.")
        if not soft and (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool):
            raise TypeError(f"Expected `targets` of shape (B,) to hold integer class ids; got {describe(targets)}.")
        terms = self._head_terms_for(logits, targets, embeddings, weight, bias)
        device = logits.device
        self._bind(device, terms.neg_head_out.dtype)
        if targets.device != device:
            targets = targets.to(device, non_blocking=True)
        num_classes = logits.shape[1]
        if not soft and device.type != "cpu":  # on CPU the scatter below raises at once
            torch._assert_async(((targets >= 0) & (targets < num_classes)).all(),
                                f"gwa: `targets` class ids out of range [0, {num_classes - 1}]")
        try:
            scores, undefined = scores_from_head_terms(logits, targets, terms, soft=soft)
        except (RuntimeError, IndexError) as error:
            if "out of bounds" not in str(error):
                raise
            raise ValueError(f"Expected `targets` class ids in [0, {num_classes - 1}] (C={num_classes} from "
                             f"logits); got an id out of range.") from None
        ids = self._resolve_ids(sample_ids, scores.shape[0], device)
        values = compute_signals(logits, targets, self.signals, soft=soft) if self.store_scores else {}
        self._accumulate(scores, undefined, ids, values)
        return scores

    def _head_terms_for(self, logits, targets, embeddings, weight, bias) -> HeadTerms:
        if embeddings is not None or weight is not None:
            if embeddings is None or weight is None:
                raise ValueError("Expected both `embeddings` and `weight` for the explicit path; got only "
                                 f"{'embeddings' if weight is None else 'weight'}.")
            if self.bias and bias is None:
                raise ValueError("Expected `bias=` in update() because the tracker has bias=True.")
            bias = bias if self.bias else None
            check_shapes(logits.shape, targets.shape, embeddings.shape, weight.shape,
                         None if bias is None else bias.shape)
            return head_terms(embeddings, weight, bias, dtype=compute_dtype(logits, embeddings, weight))
        if not self._captures:
            hint = ("the tracker has no model: pass embeddings= and weight=" if self._handle is None else
                    f"run the model forward with the head {self.head_name!r} in training mode (model.train()) "
                    "before each update(), once per update")
            raise RuntimeError(f"update() found no captured forward pass of the head; {hint}.")
        capture = self._pop_capture(logits)
        if capture.error is not None:
            raise capture.error
        if capture.embeddings_shape[0] != logits.shape[0]:
            raise ValueError(
                f"Expected `logits` for the captured forward pass of batch size {capture.embeddings_shape[0]}; got "
                f"logits.shape={tuple(logits.shape)}. With several forwards per step (gradient accumulation), "
                "call update() once per forward, in order.")
        check_shapes(logits.shape, targets.shape, capture.embeddings_shape, capture.weight_shape, capture.bias_shape)
        return capture.terms

    def _pop_capture(self, logits: torch.Tensor) -> _Capture:
        """The capture of the forward pass that produced ``logits`` if it is the head's output, else the oldest."""
        for skipped, capture in enumerate(self._captures):
            if capture.output() is logits:
                if skipped:
                    self._warn_once("skipped", f"{skipped} captured forward pass(es) of the head had no update() "
                                    "before the one whose logits were given; they were dropped.")
                for _ in range(skipped + 1):
                    self._captures.popleft()
                return capture
        return self._captures.popleft()

    def _resolve_ids(self, sample_ids, batch: int, device: torch.device) -> torch.Tensor | None:
        position = self._sightings
        if self._mode == "moments":
            return None
        if sample_ids is None:
            if self.store_scores:
                self._warn_once("positions", "update() got no sample_ids: storing scores by running position in "
                                "the epoch (the paper's behaviour). Pass sample_ids= (dataset indices) so that "
                                "scores follow samples across shuffled epochs.")
            self._used_positions = True
            return torch.arange(position, position + batch, device=device)
        ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.as_tensor(sample_ids)
        if ids.shape != (batch,):
            raise ValueError(f"Expected `sample_ids` of shape (B,) = ({batch},); got shape={tuple(ids.shape)}.")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"Expected integer `sample_ids`; got {describe(ids)}.")
        if ids.device != device or ids.dtype != torch.int64:
            ids = ids.to(device, torch.int64, non_blocking=True)
        if self.num_samples is not None and device.type != "cpu":  # on CPU the scatter below raises at once
            torch._assert_async(((ids >= 0) & (ids < self.num_samples)).all(),
                                f"gwa: `sample_ids` out of range [0, {self.num_samples - 1}] (num_samples)")
        return ids

    def _accumulate(self, scores, undefined, ids, values) -> None:
        if self._mode == "store":
            nonfinite = scores.isnan()
            try:
                valid = self._store.claim(ids, nonfinite)
            except (RuntimeError, IndexError) as error:
                if "out of bounds" not in str(error):
                    raise
                raise ValueError(f"Expected `sample_ids` in [0, {self.num_samples - 1}] (num_samples="
                                 f"{self.num_samples}); got an id out of range.") from None
            self._store.write(ids, valid, {"score": scores, "undefined": undefined, **values})
            self._non_finite += nonfinite.sum()
        elif self._mode == "chunks":
            self._chunks.append((ids, scores, undefined, values))
        else:
            nonfinite = scores.isnan()
            self._sums.add(scores, undefined, ~nonfinite, nonfinite)
        self._sightings += scores.shape[0]

    # ------------------------------------------------------------------------------------------------ end epoch
    def end_epoch(self) -> EpochResult:
        """Close the epoch: summary (exact moments, merged across ranks), per-sample scores and signals.

        Synchronises with the device once (and communicates across ranks once when distributed). Captured
        forward passes not consumed by ``update`` are discarded.
        """
        self._captures.clear()
        unbound = self._device is None  # no update this epoch: reduce on the CPU, bind later to the logits' device
        if unbound:
            self._bind(torch.device("cpu"))
        distributed = _distributed.is_active(self.process_group)
        if distributed and self._used_positions and self._mode != "moments":
            self._warn_once("dist-positions", "update() got no sample_ids under torch.distributed: moments are "
                            "merged across ranks, per-sample scores by position stay per rank.")
        if self._mode == "store":
            out = self._end_store(distributed)
        elif self._mode == "chunks":
            out = self._end_chunks(distributed)
        else:
            state = self._sums.to_state()
            _, n_undefined, n_non_finite = self._sums.counts.cpu().tolist()
            if distributed:
                state = _distributed.merge_moment_states(state, self.process_group)
                n_undefined, n_non_finite = _distributed.sum_ints([n_undefined, n_non_finite], self.process_group)
            out = state, n_undefined, n_non_finite, 0, None, None, {}
        state, n_undefined, n_non_finite, n_duplicates, scores, ids, signals = out
        summary = summarize(Moments(state), beta=self.beta, n_undefined=n_undefined,
                            min_denominator=self.min_denominator)
        if n_non_finite:
            warnings.warn(f"gwa: {n_non_finite} sample(s) with NaN/Inf logits, embeddings or targets were skipped "
                          f"in epoch {self.epoch + 1} (see EpochResult.n_non_finite).", RuntimeWarning, stacklevel=2)
        self.epoch += 1
        self.history.append(summary)
        result = EpochResult(epoch=self.epoch, summary=summary, scores=scores if self.store_scores else None,
                             sample_ids=ids, signals=signals if self.store_scores else {},
                             n_duplicates=int(n_duplicates), n_non_finite=int(n_non_finite))
        if unbound:
            self._device = None
        self._reset_epoch()
        return result

    def _end_store(self, distributed: bool):
        """Moments, counts and per-sample arrays from the device store (deduplicated by construction)."""
        n_non_finite = int(self._non_finite)
        n_duplicates = self._sightings - int(self._store.seen.sum()) - n_non_finite
        values = self._store.values
        if distributed and not self._used_positions:
            store, n_duplicates, n_non_finite = _distributed.reduce_store(
                values, self._store.seen, n_duplicates, n_non_finite, self.process_group)
        else:
            store = {k: v[:-1].cpu().numpy() for k, v in values.items()}
        seen = ~np.isnan(store["score"])  # claimed samples; their scores are finite
        state = batch_state(store["score"][seen])
        n_undefined = int(store["undefined"][seen].sum())
        if distributed and self._used_positions:
            state = _distributed.merge_moment_states(state, self.process_group)
            n_undefined, n_non_finite, n_duplicates = _distributed.sum_ints(
                [n_undefined, n_non_finite, n_duplicates], self.process_group)
        scores = store["score"].astype(np.float32)
        signals = {name: store[name].astype(np.float32) for name in self.signals}
        return state, n_undefined, n_non_finite, n_duplicates, scores, None, signals

    def _end_chunks(self, distributed: bool):
        """Moments, counts and per-sample arrays from the epoch's chunks, first sighting of each id kept."""
        ids, scores, undefined, signals = self._gather_chunks(distributed and not self._used_positions)
        finite = ~np.isnan(scores)  # NaN marks non-finite inputs: not a sighting of the id
        n_non_finite = int((~finite).sum())
        ids, scores, undefined = ids[finite], scores[finite], undefined[finite]
        signals = {k: v[finite] for k, v in signals.items()}
        keep = first_occurrence(ids)
        n_duplicates = int((~keep).sum())
        state = batch_state(scores[keep])
        n_undefined = int(undefined[keep].sum())
        if distributed and self._used_positions:
            state = _distributed.merge_moment_states(state, self.process_group)
            n_undefined, n_non_finite, n_duplicates = _distributed.sum_ints(
                [n_undefined, n_non_finite, n_duplicates], self.process_group)
        order = np.argsort(ids[keep], kind="stable")
        signals = {k: v[keep][order].astype(np.float32) for k, v in signals.items()}
        return (state, n_undefined, n_non_finite, n_duplicates, scores[keep][order].astype(np.float32),
                ids[keep][order], signals)

    def _gather_chunks(self, distributed: bool):
        """Concatenate the epoch's chunks on the host (all ranks' in rank order): ids, scores, undefined, signals."""
        def cat(parts):
            return torch.cat(parts).cpu().numpy() if parts else np.zeros(0)
        ids = cat([c[0] for c in self._chunks]).astype(np.int64)
        scores = cat([c[1].double() for c in self._chunks])
        undefined = cat([c[2] for c in self._chunks]).astype(bool)
        signals = {name: cat([c[3][name].double() for c in self._chunks]) for name in self.signals}
        if distributed:
            return _distributed.gather_chunks(ids, scores, undefined, signals, self.process_group)
        return ids, scores, undefined, signals

    # -------------------------------------------------------------------------------------------------- state
    def _bind(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Create the epoch's device tensors on first use: on the first logits' device, scores in their dtype."""
        if self._device is not None:
            if device != self._device:
                raise ValueError(f"Expected `logits` on {self._device} like the earlier batches; got {device}.")
            return
        self._device = device
        if self._mode == "store":
            self._store = SampleStore(self.num_samples, self.signals, device, dtype)
            self._non_finite = torch.zeros((), dtype=torch.int64, device=device)
        elif self._mode == "moments":
            self._sums = EpochSums(device)
        if self._pending_state is not None:
            self._load_epoch_state(self._pending_state)
            self._pending_state = None

    def _reset_epoch(self) -> None:
        store = getattr(self, "_store", None)
        device, dtype = self._device, store.values["score"].dtype if store is not None else torch.float32
        self._device = None
        self._sums = None
        self._store = None
        self._non_finite = None
        self._chunks: list = []
        self._sightings = 0
        self._used_positions = False
        if device is not None:
            self._bind(device, dtype)

    def state_dict(self) -> dict:
        """Plain values and CPU tensors: settings, epoch counter, history and the partial epoch."""
        epoch_state = self._pending_state
        if self._device is not None:
            epoch_state = {
                "sums": None if self._sums is None else self._sums.state_dict(),
                "non_finite": None if self._non_finite is None else int(self._non_finite),
                "sightings": self._sightings,
                "used_positions": self._used_positions,
                "store": None if self._store is None else self._store.state_dict(),
                "chunks": [(i.cpu(), s.cpu(), u.cpu(), {k: v.cpu() for k, v in sig.items()})
                           for i, s, u, sig in self._chunks],
            }
        return {"format": 1, "epoch": self.epoch, "history": [dataclasses.asdict(s) for s in self.history],
                "num_samples": self.num_samples, "bias": self.bias, "signals": list(self.signals),
                "beta": self.beta, "epoch_state": epoch_state}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the partial epoch resumes where it stopped."""
        for key in ("num_samples", "bias", "signals"):
            mine = list(self.signals) if key == "signals" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(f"Expected a state with {key}={mine!r} like this tracker; got {state[key]!r}.")
        self.epoch = int(state["epoch"])
        self.history = [EpochSummary(**s) for s in state["history"]]
        self._captures.clear()
        self._device = None
        self._reset_epoch()
        self._pending_state = state["epoch_state"]

    def _load_epoch_state(self, s: dict) -> None:
        device = self._device
        if s["sums"] is not None:
            self._sums.load_state_dict(s["sums"])
        if s["non_finite"] is not None:
            self._non_finite.fill_(s["non_finite"])
        self._sightings = int(s["sightings"])
        self._used_positions = bool(s["used_positions"])
        if s["store"] is not None:
            self._store.load_state_dict(s["store"])
        self._chunks = [(i.to(device), sc.to(device), u.to(device), {k: v.to(device) for k, v in sig.items()})
                        for i, sc, u, sig in s["chunks"]]

    # --------------------------------------------------------------------------------------------- lifecycle
    def remove(self) -> None:
        """Remove the forward hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._captures.clear()

    def __enter__(self) -> GWATracker:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"gwa: {message}", UserWarning, stacklevel=3)
