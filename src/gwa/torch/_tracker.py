"""GWATracker: per-epoch gradient-weight alignment of a torch model, captured at forward time.

The tracker wires three parts: the head's forward hook and the pairing of each ``update()`` with its forward
pass (:mod:`gwa.torch._pairing`), the checks of ``update()``'s inputs (:mod:`gwa.torch._checks`) and the epoch's
buffer (:mod:`gwa.torch._epoch`: deferral, scoring, storage, the ranks' agreement). One path scores a batch,
:meth:`EpochBuffer.add`: ``update()`` reaches it through the checks, which record what they saw in a
:class:`Plan`; a later call with the same shapes, dtypes and devices, whose logits are the head's output, is the
same call with those checks already done and goes to it directly (on a CPU, Python and dispatch cost more per
step than the arithmetic).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from gwa._kernel import UNDEFINED_SCORE
from gwa._moments import Moments
from gwa._summary import MIN_DENOMINATOR, PAPER_BETA, EpochSummary, summarize
from gwa._validation import check_finite, check_positive
from gwa.torch._checks import (
    SCORE_DTYPES,
    check_class_ids,
    check_sample_ids,
    check_tracker_args,
    check_update_types,
    soft_target_violations,
)
from gwa.torch._deferred import DEFAULT_DEFER
from gwa.torch._epoch import EpochBuffer, EpochSettings, Plan, admits
from gwa.torch._head import find_head
from gwa.torch._kernel import Scorer
from gwa.torch._pairing import Pairing
from gwa.torch._result import EpochResult, epoch_result, summary_from_state, summary_state
from gwa.torch._signals import check_signal_names
from gwa.torch._state import validate_state
from gwa.torch._storage import STATE_FORMAT, IndexedStore, MomentsOnly, SparseStore, Storage
from torch import nn

logger = logging.getLogger("gwa")


class GWATracker:
    """Track per-sample alignment scores and the per-epoch GWA of a classifier during training.

    Args:
        model: the network; its classifier head is found by :func:`gwa.torch.find_head` and hooked. None for
            the explicit path (pass ``embeddings=`` and ``weight=`` to :meth:`update`).
        head: override the head (an ``nn.Linear`` or its dotted name in ``model``).
        num_samples: dataset size: scores are returned indexed by sample id (ids must be in
            ``[0, num_samples)``). None: sorted unique ids and their scores.
        bias: include the head bias in the cosine (the paper leaves it out).
        signals: companion per-sample signals to store, among ``loss, margin, p_gold, el2n, pred, correct``.
        label_smoothing: the loss's label smoothing (``F.cross_entropy(..., label_smoothing=eps)``), recorded in
            :attr:`label_smoothing`. Pass :meth:`update` the targets the loss is given (class ids, or mixup rows),
            not the smoothed distribution: scores against them gave the better stop choice and flags in
            ``experiments/soft_targets.py`` (docs/soft-targets.md).
        store_scores: keep per-sample scores (and signals). False without ``num_samples`` keeps only the
            epoch's moments (O(1) memory; repeated ids then count each time); with ``num_samples`` the epoch
            still keeps its sightings to count each sample once, and returns no per-sample arrays.
        score_dtype: ``torch.float32`` (default) or ``torch.float16``: storage of the per-sample scores and
            signals during the epoch (float16: 11 instead of 17 bytes per sighting; scores rounded to about 3
            significant digits, and the epoch's moments are taken from the rounded scores).
        compile: run the fused scorer through ``torch.compile`` (falls back to the eager path, with a warning,
            where compiling fails). Off by default: on a CPU it was slower than the eager kernel in every run of
            ``benchmarks/torch_overhead.py``, and each batch shape costs about 15 s of compilation.
        defer: score the batches of ``defer`` consecutive :meth:`update` calls together, in one pass of the
            kernel over their rows (:data:`DEFAULT_DEFER` = 32); 0: score each batch in its own ``update()``,
            which then returns the batch's scores. With ``defer``, :meth:`update` keeps only detached references
            (logits, ``-W x`` and norms from the forward hook, targets, ids) and returns None; the scores are the
            same (the same kernel on the same rows, see ``docs/performance.md``). It costs ``defer`` batches of
            logits twice over in memory (scored early above :data:`DEFER_MAX_ELEMENTS` logits) and saves the
            kernel's eight operations per step, which is what a step pays on a CPU. Class ids out of range are
            then reported when their batch is scored (the ``defer``-th update, :meth:`end_epoch` or
            :meth:`state_dict`), not by their own ``update()`` (the epoch's first ``update()`` checks at once),
            and a logits, targets or ids tensor changed in place before its batch is scored raises a
            ``RuntimeError``.
        unpaired: what :meth:`update` does when it cannot tell which captured forward pass produced its logits
            (they are not the head's output tensor and several forward passes are pending): ``"raise"``
            (default) or ``"skip"`` (return NaN scores, count the samples in :attr:`EpochResult.n_unpaired`).
        min_denominator: the summary's guard threshold on ``excess_kurtosis + beta``.
        beta: the paper's beta.
        process_group: the ``torch.distributed`` group to reduce over at ``end_epoch`` (default: the world
            when ``torch.distributed`` is initialised).

    Head: see :func:`gwa.torch.find_head` for the discovery rule; the chosen head is in :attr:`head_name` and
    :attr:`head_shape` and logged once (logger ``"gwa"``, level INFO). At the first :meth:`update` the tracker
    checks that the hooked head produced the logits being scored (the same tensor, or the same values up to a
    positive scale such as a temperature) and raises a ``ValueError`` naming the hooked head and ``head=``
    otherwise.

    Pairing: the forward hook captures only forward passes of the head in training mode with autograd enabled
    (evaluation, teacher and ``no_grad`` forwards are ignored; so are forwards inside :meth:`paused`). Each
    :meth:`update` consumes the capture whose output is the given ``logits``; when the logits are not the
    head's output tensor (``logits / T``), the only pending capture; with several pending captures and no
    identity, it raises (or skips, see ``unpaired``): it never pairs logits with another batch's forward pass.

    Everything stays on the device during the epoch; the host reads the epoch once, at :meth:`end_epoch`. The
    first ``update`` of each epoch checks its inputs eagerly (one host read); later steps record violations on
    the device (soft targets that are not probability rows, sample ids out of range), and ``end_epoch`` raises
    a ``ValueError`` if there were any.

    NaN/Inf in the logits, embeddings, head or soft targets is detected on device: those samples get NaN
    scores, are left out of the moments and the store, and are counted in :attr:`EpochResult.n_non_finite`
    (with a ``RuntimeWarning`` at ``end_epoch``), so they cannot poison the epoch silently.

    With ``defer=0``, the returned per-step scores are also the tracker's stored copy: read them, do not modify
    them in place.

    Example:
        >>> import torch, gwa.torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> with gwa.torch.GWATracker(model, num_samples=6) as tracker:
        ...     logits = model(torch.randn(6, 4))
        ...     tracker.update(logits, torch.tensor([0, 1, 2, 0, 1, 2]), sample_ids=torch.arange(6))
        ...     result = tracker.end_epoch()
        >>> result.epoch, result.summary.n, result.scores.shape
        (1, 6, (6,))
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        head: nn.Module | str | None = None,
        num_samples: int | None = None,
        bias: bool = False,
        signals=(),
        label_smoothing: float = 0.0,
        store_scores: bool = True,
        score_dtype=torch.float32,
        compile: bool = False,
        defer: int = DEFAULT_DEFER,
        unpaired: str = "raise",
        min_denominator: float = MIN_DENOMINATOR,
        beta: float = PAPER_BETA,
        process_group=None,
    ):
        check_tracker_args(num_samples, score_dtype, defer, unpaired)
        self.num_samples = num_samples
        self.bias = bool(bias)
        self.signals = check_signal_names(signals)
        self.label_smoothing = check_finite("label_smoothing", label_smoothing, low=0.0, high=1.0)
        self.store_scores = bool(store_scores)
        self.num_classes: int | None = None  # the logits' C, known from the first update()
        self.score_dtype = SCORE_DTYPES[score_dtype]
        self.unpaired = unpaired
        self.defer = defer
        self.min_denominator = float(min_denominator)
        if self.min_denominator != self.min_denominator:
            raise ValueError(
                "Expected `min_denominator` to be a number; got nan (it would switch the guard off)."
            )
        self.beta = check_positive("beta", beta)
        self.process_group = process_group
        self.history: list[EpochSummary] = []
        self.epoch = 0  # completed epochs
        self.head_name: str | None = None
        self.head: nn.Linear | None = None
        self._warned: set[str] = set()
        self._scorer = Scorer(compile)
        if model is None and head is not None:
            model = head if isinstance(head, nn.Module) else None
            if model is None:
                raise ValueError("Expected `model` when `head` is given by name; got model=None.")
        if model is not None:
            self.head_name, self.head = find_head(model, head)
            if self.bias and self.head.bias is None:
                raise ValueError(
                    f"Expected the head {self.head_name!r} to have a bias because bias=True; it has none."
                )
        self._pairing = Pairing(
            model,
            self.head_name,
            self.head,
            bias=self.bias,
            defer=defer,
            unpaired=unpaired,
            warn_once=self._warn_once,
        )
        if self.head is not None:
            logger.info(
                "gwa: tracking the classifier head %r, nn.Linear of weight shape (C, D) = %s",
                self.head_name,
                self.head_shape,
            )
        self._settings = EpochSettings(
            num_samples,
            self.store_scores,
            self.signals,
            self.score_dtype,
            keep_classes=self.store_scores,  # per-class evidence goes with the per-sample scores
            defer=defer,
            scorer=self._scorer,
        )
        self._new_epoch()

    def _new_epoch(self, pending_state: dict | None = None) -> None:
        self._epoch = EpochBuffer(self._settings, pending_state)
        self._plan: Plan | None = None  # the epoch's first update always takes the checked path

    @property
    def head_shape(self) -> tuple[int, int] | None:
        """``(C, D)`` of the hooked head's weight, None on the explicit path."""
        return None if self.head is None else (self.head.weight.shape[0], self.head.weight.shape[1])

    @property
    def storage(self) -> Storage:
        """The epoch's storage strategy: :class:`IndexedStore`, :class:`SparseStore` or :class:`MomentsOnly`.

        With ``defer``, batches not yet scored are not in it (they are kept by the tracker until scored).
        """
        return self._epoch.storage

    def __repr__(self) -> str:
        head = "explicit (no hook)" if self.head is None else f"{self.head_name!r} {self.head_shape}"
        return (
            f"GWATracker(head={head}, storage={self.storage.name}, num_samples={self.num_samples}, "
            f"epoch={self.epoch})"
        )

    @contextlib.contextmanager
    def paused(self):
        """Forward passes inside this block are not captured (a second SAM pass, an extra augmented view)."""
        with self._pairing.pause():
            yield self

    # --------------------------------------------------------------------------------------------------- update
    def update(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        sample_ids=None,
        *,
        embeddings: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Score one batch and add it to the epoch. No host synchronisation after the epoch's first call.

        Call once per forward pass of the model in training mode (with gradient accumulation: once per
        micro-batch), before or after ``optimizer.step()``: the head's weights were captured at forward time.

        Args:
            logits: ``(B, C)`` logits of that forward pass (bf16/fp16 are upcast).
            targets: ``(B,)`` class ids or ``(B, C)`` probabilities (label smoothing, mixup, distillation).
            sample_ids: ``(B,)`` integer dataset indices of the samples (tensor, array or list). None: running
                positions within the epoch are used (the paper's behaviour; warned once when scores are stored).
                Either always or never within an epoch.
            embeddings: ``(B, D)`` head inputs, for the explicit path without a hook (with ``weight``).
            weight: ``(C, D)`` head weight used in the forward pass that produced ``logits``.
            bias: ``(C,)`` head bias (explicit path with ``bias=True``).

        Returns:
            None by default (``defer``: the batch is scored later, together with the next ones). With
            ``defer=0``: ``(B,)`` detached scores on the logits' device; NaN for samples with NaN/Inf inputs.

        Raises:
            RuntimeError: when no forward pass of the head in training mode is waiting to be consumed, or when
                the forward pass that produced ``logits`` cannot be identified (``unpaired="raise"``).
            ValueError: on mismatched shapes, class ids / sample ids out of range or soft targets that are not
                probabilities (at once on the epoch's first call and on CPU for class ids, else at
                ``end_epoch``), or logits that the hooked head did not produce (first call).
            TypeError: on non-tensor logits or targets of the wrong dtype.
        """
        plan = self._plan
        captures = self._pairing.captures
        if plan is not None and embeddings is None and weight is None and captures:
            # The checked path with its checks done: the same shapes, dtypes and devices as the last checked call,
            # and the logits are the head output of the oldest pending forward, so nothing it checks can differ
            # (on a CPU, Python and dispatch cost more here than the arithmetic).
            capture = captures[0]
            if (
                capture.output() is logits
                and capture.error is None
                and admits(plan, logits, targets, sample_ids)
            ):
                captures.popleft()
                assert capture.terms is not None  # a capture without an error has its terms
                return self._epoch.add(plan, logits, targets, sample_ids, capture.terms)
        return self._checked_update(logits, targets, sample_ids, embeddings, weight, bias)

    def _checked_update(self, logits, targets, sample_ids, embeddings, weight, bias) -> torch.Tensor | None:
        """Every check, every input form (explicit path, soft targets, casts); sets :attr:`_plan` for the next."""
        epoch = self._epoch
        soft = check_update_types(logits, targets, sample_ids, epoch.counts.positions)
        terms = self._pairing.terms_for(logits, targets, embeddings, weight, bias)
        if terms is None:  # unpaired="skip"
            epoch.skip(logits.shape[0])
            return None if self.defer else torch.full((logits.shape[0],), float("nan"), device=logits.device)
        device = logits.device
        first = epoch.counts.sightings == 0
        epoch.bind(device)
        if targets.device != device:
            targets = targets.to(device, non_blocking=True)
        self.num_classes = logits.shape[1]
        if soft:
            targets = targets.detach().to(terms.neg_head_out.dtype)
            epoch.record_soft_violations(soft_target_violations(targets), first)
        elif first and self.defer:  # later batches' class ids are checked when they are scored
            check_class_ids(targets, self.num_classes)
        keeps_ids = epoch.storage.keeps_ids
        ids = None
        if sample_ids is None:
            if self.store_scores and keeps_ids:
                self._warn_once(
                    "positions",
                    "update() got no sample_ids: storing scores by running position in "
                    "the epoch (the paper's behaviour). Pass sample_ids= (dataset indices) so that "
                    "scores follow samples across shuffled epochs.",
                )
        elif keeps_ids:
            ids = check_sample_ids(sample_ids, logits.shape[0], device, self.num_samples, first)
        plan = Plan(
            logits.shape,
            targets.shape,
            targets.dtype,
            logits.get_device(),
            sample_ids is None,
            keeps_ids,
            soft,
            bool(self.signals) and self.store_scores,
        )
        scores = epoch.add(plan, logits, targets, ids, terms)
        if (
            not soft
            and embeddings is None
            and weight is None
            and not self._scorer.compile
            and targets.dtype is torch.int64
            and self._pairing.last_by_identity
            and (ids is None or ids is sample_ids)
        ):
            self._plan = plan  # the next call like this one skips the checks above
        return scores

    # ------------------------------------------------------------------------------------------------ end epoch
    def end_epoch(self) -> EpochResult:
        """Close the epoch: summary (exact moments, merged across ranks), per-sample scores and signals.

        Synchronises with the device once (and communicates across ranks once or twice when distributed).
        Captured forward passes not consumed by ``update`` are discarded.

        Raises:
            ValueError: when an ``update()`` of the epoch had sample ids out of range or soft targets that are
                not probabilities (recorded on the device, read here).
            RuntimeError: under ``torch.distributed``, when ranks disagree on the settings that decide the
                collectives (storage, ``num_samples``, ids given or not, dtype, signals); every rank raises.
        """
        self._pairing.captures.clear()
        tally = self._epoch.finish(self.epoch + 1, self.process_group, self._warn_once)
        summary = summarize(
            Moments(tally.state),
            beta=self.beta,
            n_undefined=tally.n_undefined,
            min_denominator=self.min_denominator,
        )
        if tally.n_non_finite:
            warnings.warn(
                f"gwa: {tally.n_non_finite} sample(s) with NaN/Inf logits, embeddings or targets were "
                f"skipped in epoch {self.epoch + 1} (see EpochResult.n_non_finite).",
                RuntimeWarning,
                stacklevel=2,
            )
        n_unpaired = self._epoch.counts.n_unpaired
        if n_unpaired:
            warnings.warn(
                f"gwa: {n_unpaired} sample(s) of update() calls whose forward pass could not be "
                f"identified were skipped in epoch {self.epoch + 1} (see EpochResult.n_unpaired).",
                RuntimeWarning,
                stacklevel=2,
            )
        self.epoch += 1
        self.history.append(summary)
        result = epoch_result(self.epoch, summary, tally, n_unpaired, self.store_scores, self.num_classes)
        self._new_epoch()
        return result

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain values and CPU tensors: settings, epoch counter, history and the partial epoch."""
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "history": [summary_state(s) for s in self.history],
            "num_samples": self.num_samples,
            "bias": self.bias,
            "signals": list(self.signals),
            "beta": self.beta,
            "epoch_state": self._epoch.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (validated: format, settings, counts, shapes); the partial epoch resumes."""
        epoch_state = validate_state(state, self)
        self.epoch = int(state["epoch"])
        self.history = [summary_from_state(s) for s in state["history"]]
        self._pairing.captures.clear()
        self._new_epoch(epoch_state)

    # --------------------------------------------------------------------------------------------- lifecycle
    def remove(self) -> None:
        """Remove the forward hook (idempotent)."""
        self._pairing.remove()

    def __enter__(self) -> GWATracker:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"gwa: {message}", UserWarning, stacklevel=3)


__all__ = ["UNDEFINED_SCORE", "EpochResult", "GWATracker", "IndexedStore", "MomentsOnly", "SparseStore"]
