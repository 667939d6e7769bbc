"""GWATracker: per-epoch gradient-weight alignment of a torch model, captured at forward time.

A forward hook on the classifier head takes, while the head is in training mode, what the cosine needs from
the head with the weights *of that forward pass* (``-W x`` and ``||x|| ||W||_F``); :meth:`GWATracker.update`
then needs only the logits and the targets, so its scores are the same before or after ``optimizer.step()``.

By default ``update`` keeps the batch (detached references) and every 32nd call scores the kept batches in one
pass of the fused kernel (:func:`gwa.torch._kernel.fused_scores`): three tensor operations in the hook per step
and none in ``update``; with ``defer=0`` each ``update`` runs the kernel (four operations in the hook, eight in
``update``) and returns the batch's scores. No host synchronisation, and no per-step bookkeeping of repeated
sample ids: each step's scores are kept as they are and duplicates are resolved once, at ``end_epoch``
(:mod:`gwa.torch._storage`). Checks that can wait (sample-id range, soft-target rows after the first batch)
run on the device and are read at ``end_epoch``; a call with the same shapes, dtypes and devices as the last
fully checked one, whose logits are the head's output, goes straight to the kernel.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, cast

import numpy as np

import torch
from gwa._kernel import UNDEFINED_SCORE
from gwa._moments import Moments
from gwa._summary import MIN_DENOMINATOR, PAPER_BETA, EpochSummary, summarize
from gwa._validation import check_finite, check_positive, check_shapes, describe
from gwa.torch import _distributed
from gwa.torch._deferred import (
    DEFAULT_DEFER,
    DEFER_MAX_ELEMENTS,
    Deferred,
    class_dtype,
    owned,
    score_pending,
    versions,
)
from gwa.torch._head import find_head, is_stale_pairing, linear_candidates
from gwa.torch._kernel import (
    CaptureTerms,
    Scorer,
    SplitTerms,
    capture_split_terms,
    capture_terms,
    class_id_error,
    compute_dtype,
    fused_scores,
    fused_soft_scores,
)
from gwa.torch._result import EpochResult, evidence_of_epoch, summary_from_state, summary_state
from gwa.torch._signals import check_signal_names, compute_signals
from gwa.torch._storage import (
    STATE_FORMAT,
    Chunk,
    IndexedStore,
    MomentsOnly,
    SparseStore,
    Storage,
    make_storage,
)
from torch import nn

logger = logging.getLogger("gwa")

#: Forward passes captured but not yet consumed by ``update`` beyond which the oldest is dropped (with a warning).
MAX_PENDING_CAPTURES = 64
#: Tolerance of the soft-target checks (rows >= -tol, |row sum - 1| <= tol), as in :func:`gwa.alignment`.
SOFT_TARGET_ATOL = 1e-4
#: Relative tolerance when the logits given to ``update`` are not the head's output tensor but should hold its
#: values up to a positive scale (``logits / T``, a cast, a copy).
SAME_VALUES_RTOL = 1e-3
_SCORE_DTYPES = {
    torch.float32: torch.float32,
    torch.float16: torch.float16,
    "float32": torch.float32,
    "float16": torch.float16,
}


def _dead_ref():
    return None


class _Capture(NamedTuple):
    output: Callable[[], torch.Tensor | None]  # weak ref to the head's output, to pair update(logits) with it
    terms: CaptureTerms | SplitTerms | None  # SplitTerms only with defer
    embeddings_shape: tuple
    weight_shape: tuple
    bias_shape: tuple | None
    error: Exception | None
    values: torch.Tensor | None  # the head's output, kept until the tracker has verified its head once


class _Plan(NamedTuple):
    """What the last fully checked ``update()`` saw; a call that matches it takes the fast path."""

    logits_shape: torch.Size
    targets_shape: torch.Size
    targets_dtype: torch.dtype
    device_index: int  # Tensor.get_device(): -1 on CPU
    positions: bool
    keeps_ids: bool
    assert_range: bool
    num_classes: int
    signals: bool


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
            signals during the epoch (float16: 11 instead of 20 bytes per sighting; scores rounded to about 3
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

    # The epoch's state, (re)set by _reset_epoch().
    _storage: Storage
    _device: torch.device | None
    _sightings: int
    _positions: bool | None  # None: no update yet; True: running positions; False: ids
    _dtype: torch.dtype | None  # compute dtype of the epoch's scores
    _n_unpaired: int
    _soft_violations: torch.Tensor | None
    _plan: _Plan | None  # the epoch's first update always takes the checked path
    _last_by_identity: bool
    _deferred: list[Deferred]  # defer: batches kept, not yet scored
    _deferred_rows: int  # their logits' elements (rows x classes)
    _deferred_soft: bool  # their targets are probabilities
    _deferred_offset: int  # running position of their first sample

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
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0
        ):
            raise ValueError(f"Expected `num_samples` to be a positive int or None; got {num_samples!r}.")
        if score_dtype not in _SCORE_DTYPES:
            raise ValueError(
                f"Expected `score_dtype` to be torch.float32 or torch.float16; got {score_dtype!r}."
            )
        if isinstance(defer, bool) or not isinstance(defer, int) or defer < 0:
            raise ValueError(
                f"Expected `defer` to be a non-negative int (update() calls scored together; 0: each "
                f"at once); got {defer!r}."
            )
        if unpaired not in ("raise", "skip"):
            raise ValueError(f"Expected `unpaired` to be 'raise' or 'skip'; got {unpaired!r}.")
        self.num_samples = num_samples
        self.bias = bool(bias)
        self._bias_out = not self.bias  # the hook's steady-state path: the bias stays out of the cosine
        self.signals = check_signal_names(signals)
        self.label_smoothing = check_finite("label_smoothing", label_smoothing, low=0.0, high=1.0)
        self.store_scores = bool(store_scores)
        # Per-sample predicted and given classes (per-class evidence) go with the per-sample scores.
        self._keep_classes = self.store_scores
        self.num_classes: int | None = None  # the logits' C, known from the first update()
        self.score_dtype = _SCORE_DTYPES[score_dtype]
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
        self._handle = None
        self._captures: deque[_Capture] = deque()
        self._warned: set[str] = set()
        self._paused = False
        self._checked_shapes: tuple[torch.Size, torch.Size, tuple, tuple, tuple | None] | None = None
        self._head_verified = False
        self._agreed = False
        self._scorer = Scorer(compile)
        if model is None and head is not None:
            model = head if isinstance(head, nn.Module) else None
            if model is None:
                raise ValueError("Expected `model` when `head` is given by name; got model=None.")
        if model is not None:
            self.head_name, self.head = find_head(model, head)
            self._model_ref = weakref.ref(model)
            if self.bias and self.head.bias is None:
                raise ValueError(
                    f"Expected the head {self.head_name!r} to have a bias because bias=True; it has none."
                )
            self._handle = self.head.register_forward_hook(self._capture)
            logger.info(
                "gwa: tracking the classifier head %r, nn.Linear of weight shape (C, D) = %s",
                self.head_name,
                self.head_shape,
            )
        self._storage_args = (
            num_samples,
            self.store_scores,
            self.signals,
            self.score_dtype,
            self._keep_classes,
        )
        self._device = None
        self._pending_state: dict | None = None
        self._reset_epoch()

    @property
    def head_shape(self) -> tuple[int, int] | None:
        """``(C, D)`` of the hooked head's weight, None on the explicit path."""
        return None if self.head is None else (self.head.weight.shape[0], self.head.weight.shape[1])

    @property
    def storage(self) -> Storage:
        """The epoch's storage strategy: :class:`IndexedStore`, :class:`SparseStore` or :class:`MomentsOnly`.

        With ``defer``, batches not yet scored are not in it (they are kept by the tracker until scored).
        """
        return self._storage

    def __repr__(self) -> str:
        head = "explicit (no hook)" if self.head is None else f"{self.head_name!r} {self.head_shape}"
        return (
            f"GWATracker(head={head}, storage={self._storage.name}, num_samples={self.num_samples}, "
            f"epoch={self.epoch})"
        )

    def _head_candidates(self, num_classes: int) -> str:
        """The model's nn.Linear layers with ``num_classes`` outputs, for an error message ("" without a model)."""
        model = self._model_ref() if getattr(self, "_model_ref", None) is not None else None
        return linear_candidates(model, num_classes) if model is not None else ""

    @contextlib.contextmanager
    def paused(self):
        """Forward passes inside this block are not captured (a second SAM pass, an extra augmented view)."""
        previous, self._paused = self._paused, True
        try:
            yield self
        finally:
            self._paused = previous

    # ----------------------------------------------------------------------------------------------------- hook
    def _capture(self, module: nn.Linear, inputs, output) -> None:
        # Training forwards run with autograd; eval-mode and no_grad forwards (teacher, EMA, scoring) are skipped.
        if self._paused or not module.training or not torch.is_grad_enabled():
            return
        x = inputs[0] if inputs else None
        weight = module.weight
        if (
            self._bias_out
            and self._head_verified
            and type(x) is torch.Tensor
            and type(output) is torch.Tensor
            and len(self._captures) < MAX_PENDING_CAPTURES
            and x.dim() == 2
        ):
            # Steady state: the head's output is exact in its dtype (same dtype in and out: autocast would have
            # given a half-precision output), so -W x is read off it. Each line here runs once per step.
            dtype = output.dtype
            if (
                (dtype is torch.float32 or dtype is torch.float64)
                and x.dtype is dtype
                and weight.dtype is dtype
            ):
                self._captures.append(
                    _Capture(
                        weakref.ref(output),
                        capture_split_terms(x, weight, module.bias, output)
                        if self.defer
                        else capture_terms(x, weight, module.bias, output, include_bias=False, dtype=dtype),
                        x.shape,
                        weight.shape,
                        None,
                        None,
                        None,
                    )
                )
                return
        bias = module.bias
        error: Exception | None = None
        terms: CaptureTerms | SplitTerms | None = None
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            error = ValueError(
                f"Expected the head {self.head_name!r} to receive embeddings of shape (N, D); got "
                f"{describe(x)}. Flatten the sequence dimension or pass embeddings= to update()."
            )
        else:
            dtype = (
                torch.float64 if x.dtype == torch.float64 or weight.dtype == torch.float64 else torch.float32
            )
            if torch.is_autocast_enabled(x.device.type):
                # Autocast ran W x in half precision: recompute it in the compute dtype.
                with torch.autocast(device_type=x.device.type, enabled=False):
                    terms = capture_terms(x, weight, bias, None, include_bias=self.bias, dtype=dtype)
            elif (
                self.defer
                and not self.bias
                and type(output) is torch.Tensor
                and output.dtype is dtype
                and x.dtype is dtype
                and weight.dtype is dtype
            ):
                # The batch is scored later: its norm's product is taken then, for all batches at once.
                terms = capture_split_terms(x, weight, bias, output)
            else:
                out = output if isinstance(output, torch.Tensor) else None
                terms = capture_terms(x, weight, bias, out, include_bias=self.bias, dtype=dtype)
        if len(self._captures) >= MAX_PENDING_CAPTURES:
            self._captures.popleft()
            self._warn_once(
                "overflow",
                f"{MAX_PENDING_CAPTURES} forward passes of the head in training mode were "
                "captured without update(); dropping the oldest. Call update() once per forward, or "
                "wrap forwards that are not scored in `with tracker.paused():`.",
            )
        is_tensor = isinstance(output, torch.Tensor)
        self._captures.append(
            _Capture(
                weakref.ref(output) if is_tensor else _dead_ref,
                terms,
                tuple(getattr(x, "shape", ())),
                tuple(weight.shape),
                None if bias is None or not self.bias else tuple(bias.shape),
                error,
                output.detach() if is_tensor and not self._head_verified else None,
            )
        )

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
        if plan is not None and embeddings is None and weight is None and self._captures:
            # Steady state: the same shapes, dtypes and devices as the last checked call, and the logits are the
            # head output of the oldest pending forward. Everything the slow path would check is unchanged, so
            # go straight to the kernel (on a CPU, Python and dispatch cost more here than the arithmetic).
            capture = self._captures[0]
            if (
                capture.output() is logits
                and capture.error is None
                and logits.shape == plan.logits_shape
                and targets.shape == plan.targets_shape
                and targets.dtype is plan.targets_dtype
                and targets.get_device() == plan.device_index
                and (
                    sample_ids is None
                    if plan.positions
                    else (
                        type(sample_ids) is torch.Tensor
                        and sample_ids.dtype is torch.int64
                        and sample_ids.shape == plan.targets_shape
                        and sample_ids.get_device() == plan.device_index
                    )
                )
            ):
                self._captures.popleft()
                assert capture.terms is not None  # a capture without an error has its terms
                neg, norm = capture.terms
                z = logits.detach()
                if z.dtype is not neg.dtype:
                    z = z.to(neg.dtype)
                if self.defer:  # _defer() inlined: the batch is kept and scored with the next ones
                    pending = self._deferred
                    if pending and (self._deferred_soft or z.dtype is not pending[0].logits.dtype):
                        self._score_deferred()
                        pending = self._deferred
                    if not pending:
                        self._deferred_soft = False
                        self._deferred_offset = self._sightings
                    ids = None if plan.positions or not plan.keeps_ids else owned(sample_ids)
                    targets = owned(targets)  # kept by reference: a refilled numpy buffer is copied
                    pending.append(Deferred(z, targets, neg, norm, ids, versions(z, targets, ids)))
                    self._sightings += z.shape[0]
                    self._deferred_rows += z.numel()
                    if len(pending) >= self.defer or self._deferred_rows >= DEFER_MAX_ELEMENTS:
                        self._score_deferred()
                    return None
                if plan.assert_range:
                    torch._assert_async(
                        ((targets >= 0) & (targets < plan.num_classes)).all(),
                        f"gwa: `targets` class ids out of range [0, {plan.num_classes - 1}]",
                    )
                norm = cast(torch.Tensor, norm)  # a SplitNorm only with defer
                try:
                    scores = fused_scores(z, targets.view(-1, 1), neg, norm)
                except (RuntimeError, IndexError) as error:
                    raise class_id_error(error, plan.num_classes) from None
                values = compute_signals(logits, targets, self.signals, soft=False) if plan.signals else {}
                self._storage.add(
                    Chunk(
                        None if plan.positions or not plan.keeps_ids else self._keep_ids(sample_ids),
                        self._sightings,
                        scores,
                        norm,
                        values,
                        *(_classes(z, targets, soft=False) if self._keep_classes else ()),
                    )
                )
                self._sightings += scores.shape[0]
                return scores
        return self._update(logits, targets, sample_ids, embeddings, weight, bias)

    def _update(self, logits, targets, sample_ids, embeddings, weight, bias) -> torch.Tensor | None:
        """All checks, every input form (explicit path, soft targets, casts); sets :attr:`_plan` for the next."""
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"Expected `logits` to be a torch.Tensor; got {type(logits).__name__}.")
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"Expected `targets` to be a torch.Tensor; got {type(targets).__name__}.")
        # Type checks first, so that a rejected call leaves its capture for the corrected call.
        soft = targets.dim() == 2
        if soft and not targets.is_floating_point():
            raise TypeError(f"Expected soft `targets` (B, C) to be floating point; got {describe(targets)}.")
        if not soft and (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool):
            raise TypeError(
                f"Expected `targets` of shape (B,) to hold integer class ids; got {describe(targets)}."
            )
        if self._positions is not None and (sample_ids is None) != self._positions:
            raise ValueError(
                "Expected `sample_ids` in every update() of an epoch or in none; got "
                f"sample_ids={'None' if sample_ids is None else 'ids'} after updates "
                f"{'without' if self._positions else 'with'} them."
            )
        terms = self._terms_for(logits, targets, embeddings, weight, bias)
        if terms is None:  # unpaired="skip"
            self._n_unpaired += logits.shape[0]
            return None if self.defer else torch.full((logits.shape[0],), float("nan"), device=logits.device)
        device = logits.device
        first = self._sightings == 0
        self._bind(device)
        if targets.device != device:
            targets = targets.to(device, non_blocking=True)
        neg, norm = terms
        z = logits.detach()
        if z.dtype != neg.dtype:
            z = z.to(neg.dtype)
        num_classes = z.shape[1]
        self.num_classes = num_classes
        if soft:
            t = targets.detach().to(neg.dtype)
            violations = _soft_target_violations(t)
            if first:
                _raise_soft_target_violations(violations.tolist())
            elif self._soft_violations is None:
                self._soft_violations = violations
            else:
                self._soft_violations += violations
        if self.defer:
            if first and not soft:  # later batches' class ids are checked when they are scored
                bounds = targets.aminmax()
                if int(bounds.min) < 0 or int(bounds.max) >= num_classes:
                    raise class_id_error(IndexError("out of bounds"), num_classes)
            ids = self._resolve_ids(sample_ids, z.shape[0], device, first)
            self._dtype = neg.dtype
            kept_targets, kept_ids = owned(t if soft else targets), None if ids is None else owned(ids)
            item = Deferred(z, kept_targets, neg, norm, kept_ids, versions(z, kept_targets, kept_ids))
            self._defer(item, soft)
            self._set_plan(logits, targets, sample_ids, ids, soft, embeddings, weight, num_classes)
            return None
        norm = cast(torch.Tensor, norm)  # a SplitNorm only with defer
        if soft:
            scores, undefined = fused_soft_scores(z, t, neg, norm)
        else:
            scores = self._scorer.score_ids(z, targets, neg, norm)
            undefined = norm  # undefined where norm <= tiny, resolved at end_epoch (no op per step)
        ids = self._resolve_ids(sample_ids, scores.shape[0], device, first)
        self._dtype = neg.dtype
        values = compute_signals(logits, targets, self.signals, soft=soft) if self.store_scores else {}
        kept_ids = None if ids is None else self._keep_ids(ids)
        classes = _classes(z, t if soft else targets, soft=soft) if self._keep_classes else ()
        self._storage.add(Chunk(kept_ids, self._sightings, scores, undefined, values, *classes))
        self._sightings += scores.shape[0]
        self._set_plan(logits, targets, sample_ids, ids, soft, embeddings, weight, num_classes)
        return scores

    def _keep_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids stored until end_epoch (``defer=0``): a numpy buffer's copied, a tensor's in-place version noted."""
        ids = owned(ids)
        self._kept_ids.append((ids, ids._version))
        return ids

    def _set_plan(self, logits, targets, sample_ids, ids, soft, embeddings, weight, num_classes) -> None:
        """Let the next call with the same signature take the fast path (hard labels, logits by identity)."""
        if (
            not soft
            and embeddings is None
            and weight is None
            and not self._scorer.compile
            and targets.dtype is torch.int64
            and self._last_by_identity
            and (sample_ids is None or ids is None or ids is sample_ids)
        ):
            self._plan = _Plan(
                logits.shape,
                targets.shape,
                targets.dtype,
                logits.get_device(),
                sample_ids is None,
                self._storage.keeps_ids,
                logits.device.type != "cpu",
                num_classes,
                bool(self.signals) and self.store_scores,
            )

    # -------------------------------------------------------------------------------------------- deferred
    def _defer(self, item: Deferred, soft: bool = False) -> None:
        """Keep one batch for later scoring; score the pending ones when ``defer`` are pending or they are large."""
        pending = self._deferred
        if pending and (
            soft is not self._deferred_soft
            or item.logits.dtype is not pending[0].logits.dtype
            or item.logits.shape[1] != pending[0].logits.shape[1]
        ):
            self._score_deferred()  # one kernel call needs one kind of targets, dtype and class count
            pending = self._deferred
        if not pending:
            self._deferred_soft = soft
            self._deferred_offset = self._sightings
        pending.append(item)
        self._sightings += item.logits.shape[0]
        self._deferred_rows += item.logits.numel()
        if len(pending) >= self.defer or self._deferred_rows >= DEFER_MAX_ELEMENTS:
            self._score_deferred()

    def _score_deferred(self) -> None:
        """Score the pending batches in one pass of the kernel and add them to the storage as one chunk."""
        pending = self._deferred
        if not pending:
            return
        self._deferred = []
        self._deferred_rows = 0
        scored = score_pending(
            pending,
            soft=self._deferred_soft,
            scorer=self._scorer,
            signals=self.signals if self.store_scores else (),
            classes=self._keep_classes,
        )
        self._storage.add(
            Chunk(
                scored.ids,
                self._deferred_offset,
                scored.scores,
                scored.undefined,
                scored.signals,
                scored.predictions,
                scored.labels,
            )
        )

    def _terms_for(self, logits, targets, embeddings, weight, bias) -> CaptureTerms | SplitTerms | None:
        if embeddings is not None or weight is not None:
            if embeddings is None or weight is None:
                raise ValueError(
                    "Expected both `embeddings` and `weight` for the explicit path; got only "
                    f"{'embeddings' if weight is None else 'weight'}."
                )
            if self.bias and bias is None:
                raise ValueError("Expected `bias=` in update() because the tracker has bias=True.")
            bias = bias if self.bias else None
            check_shapes(
                logits.shape,
                targets.shape,
                embeddings.shape,
                weight.shape,
                None if bias is None else bias.shape,
            )
            return capture_terms(
                embeddings,
                weight,
                bias,
                None,
                include_bias=bias is not None,
                dtype=compute_dtype(logits, embeddings, weight),
            )
        if not self._captures:
            hint = (
                "the tracker has no model: pass embeddings= and weight="
                if self._handle is None
                else f"run the model forward with the head {self.head_name!r} in training mode (model.train()) "
                "and with autograd on (not under torch.no_grad() or torch.inference_mode(), and not inside "
                "tracker.paused()) before each update(), once per update"
            )
            raise RuntimeError(f"update() found no captured forward pass of the head; {hint}.")
        capture = self._pop_capture(logits)
        if capture is None:
            return None
        if capture.error is not None:
            raise capture.error
        if capture.embeddings_shape[0] != logits.shape[0]:
            raise ValueError(
                f"Expected `logits` for the captured forward pass of batch size {capture.embeddings_shape[0]}; got "
                f"logits.shape={tuple(logits.shape)}. With several forwards per step (gradient accumulation), "
                "call update() once per forward, in order."
            )
        signature = (
            logits.shape,
            targets.shape,
            capture.embeddings_shape,
            capture.weight_shape,
            capture.bias_shape,
        )
        if signature != self._checked_shapes:  # the same shapes step after step: check them once
            try:
                check_shapes(*signature)
            except ValueError as error:
                if tuple(capture.weight_shape[:1]) == tuple(logits.shape[1:2]):
                    raise
                candidates = self._head_candidates(logits.shape[1])
                raise ValueError(
                    f"{error} The hooked head {self.head_name!r} (nn.Linear, weight "
                    f"{capture.weight_shape}) does not produce these logits (C={logits.shape[1]}): pass "
                    f"GWATracker(model, head=...) the classifier layer. {candidates}"
                ) from None
            self._checked_shapes = signature
        if not self._head_verified:
            self._verify_head(logits, capture)
        return capture.terms

    def _pop_capture(self, logits: torch.Tensor) -> _Capture | None:
        """The capture of the forward pass that produced ``logits``: by identity, else the only pending one."""
        for skipped, capture in enumerate(self._captures):
            if capture.output() is logits:
                if skipped:
                    self._warn_once(
                        "skipped",
                        f"{skipped} captured forward pass(es) of the head had no update() "
                        "before the one whose logits were given; they were dropped. Wrap forwards "
                        "that are not scored in `with tracker.paused():`.",
                    )
                for _ in range(skipped + 1):
                    self._captures.popleft()
                self._last_by_identity = True
                return capture
        self._last_by_identity = False
        if len(self._captures) == 1:
            capture = self._captures.popleft()
            if self._head_verified and is_stale_pairing(logits, capture.output()):  # first call: _verify_head
                stale = (
                    f"update() got logits that are not from the pending forward pass of the head "
                    f"{self.head_name!r}: that pass's output is still alive and these logits neither derive "
                    "from it nor equal it up to a scale (logits of an earlier forward?). Call update() with "
                    "the logits of the latest forward, before the next one."
                )
                if self.unpaired == "skip":
                    self._warn_once("stale", stale + " Skipping (unpaired='skip').")
                    return None
                raise RuntimeError(stale)
            return capture
        pending = len(self._captures)
        self._captures.clear()  # none of them can be paired any more
        message = (
            f"update() cannot tell which of {pending} captured forward passes of the head "
            f"{self.head_name!r} produced these logits: they are not the head's output tensor (e.g. "
            "logits / T, a copy, a DDP output) and several training-mode forwards ran since the last "
            "update(). Pass the head's output itself, call update() after each forward, or wrap forwards "
            "that are not scored in `with tracker.paused():`."
        )
        if self.unpaired == "skip":
            self._warn_once(
                "unpaired", message + " Skipping (unpaired='skip'); counted in EpochResult.n_unpaired."
            )
            return None
        raise RuntimeError(message + " (Or GWATracker(unpaired='skip') to skip such updates and count them.)")

    def _verify_head(self, logits: torch.Tensor, capture: _Capture) -> None:
        """Once: the hooked head must have produced ``logits`` (same tensor, or same values up to a scale)."""
        out = capture.values
        if capture.output() is logits or out is None:
            self._head_verified = True
            return
        ok = tuple(out.shape) == tuple(logits.shape)
        if ok:
            o, z = out.detach().double().flatten(), logits.detach().double().flatten()
            scale = float(o @ z) / max(float(o @ o), 1e-300)
            ok = scale > 0 and float(torch.linalg.vector_norm(z - scale * o)) <= SAME_VALUES_RTOL * max(
                float(torch.linalg.vector_norm(z)), 1e-300
            )
        if not ok:
            candidates = self._head_candidates(logits.shape[1])
            raise ValueError(
                f"Expected `logits` produced by the hooked head {self.head_name!r} (nn.Linear, weight {self.head_shape}); "
                f"got logits that are not its output, nor its output up to a positive scale: the head gwa found "
                f"is not the layer that produced the logits. Pass GWATracker(model, head=...) the classifier "
                f"layer. {candidates}"
            )
        self._head_verified = True

    def _resolve_ids(self, sample_ids, batch: int, device: torch.device, first: bool) -> torch.Tensor | None:
        if sample_ids is None:
            if self.store_scores and self._storage.keeps_ids:
                self._warn_once(
                    "positions",
                    "update() got no sample_ids: storing scores by running position in "
                    "the epoch (the paper's behaviour). Pass sample_ids= (dataset indices) so that "
                    "scores follow samples across shuffled epochs.",
                )
            self._positions = True
            return None
        self._positions = False
        if not self._storage.keeps_ids:
            return None
        ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.tensor(np.asarray(sample_ids))
        if ids.shape != (batch,):
            raise ValueError(
                f"Expected `sample_ids` of shape (B,) = ({batch},); got shape={tuple(ids.shape)}."
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"Expected integer `sample_ids`; got {describe(ids)}.")
        if ids.device != device or ids.dtype != torch.int64:
            ids = ids.to(device, torch.int64, non_blocking=True)
        if first and self.num_samples is not None:
            # The epoch's first batch is checked at once; later batches at end_epoch (no host read per step).
            bounds = ids.aminmax()
            lo, hi = int(bounds.min), int(bounds.max)
            if lo < 0 or hi >= self.num_samples:
                raise ValueError(
                    f"Expected `sample_ids` in [0, {self.num_samples - 1}] (num_samples="
                    f"{self.num_samples}); got an id out of range ({lo if lo < 0 else hi})."
                )
        return ids

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
        self._captures.clear()
        self._score_deferred()
        distributed = _distributed.is_active(self.process_group)
        local_error = None  # under torch.distributed, raised on every rank after the first all-gather
        try:
            if any(ids._version != version for ids, version in self._kept_ids):
                self._reset_epoch()
                raise RuntimeError(
                    "gwa: a sample_ids tensor given to update() was modified in place before end_epoch() (with "
                    "defer=0 the ids are kept by reference until then), so the epoch's scores cannot be placed. "
                    "Pass ids that are not refilled afterwards (e.g. ids.clone())."
                )
            if self._soft_violations is not None:
                _raise_soft_target_violations(self._soft_violations.tolist(), epoch=self.epoch + 1)
            if distributed:
                self._raise_bad_ids()
        except (ValueError, RuntimeError) as exc:
            if not distributed:
                raise
            local_error = exc
        positions = bool(self._positions)
        if distributed:
            positions = self._check_ranks_agree(local_error)
            if positions and self.store_scores and self._storage.keeps_ids:
                self._warn_once(
                    "dist-positions",
                    "update() got no sample_ids under torch.distributed: moments "
                    "are merged across ranks, per-sample scores by position stay per rank.",
                )
        tally = self._storage.finish(distributed=distributed, positions=positions, group=self.process_group)
        if tally.bad_ids is not None:
            self._raise_bad_ids(tally.bad_ids)
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
        if self._n_unpaired:
            warnings.warn(
                f"gwa: {self._n_unpaired} sample(s) of update() calls whose forward pass could not be "
                f"identified were skipped in epoch {self.epoch + 1} (see EpochResult.n_unpaired).",
                RuntimeWarning,
                stacklevel=2,
            )
        self.epoch += 1
        self.history.append(summary)
        result = EpochResult(
            epoch=self.epoch,
            summary=summary,
            scores=tally.scores if self.store_scores else None,
            sample_ids=tally.sample_ids,
            signals=tally.signals if self.store_scores else {},
            n_duplicates=int(tally.n_duplicates),
            n_non_finite=int(tally.n_non_finite),
            n_unpaired=self._n_unpaired,
            predictions=tally.predictions if self.store_scores else None,
            labels=tally.labels if self.store_scores else None,
            class_evidence=evidence_of_epoch(tally.scores, tally.labels, tally.predictions, self.num_classes)
            if self.store_scores
            else None,
        )
        self._reset_epoch()
        return result

    def _raise_bad_ids(self, bad_ids: tuple[int, int, int] | None = None) -> None:
        """Raise when the epoch's sample ids (of the indexed store) leave ``[0, num_samples)``; without
        ``bad_ids`` they are checked here (one device sync), before any collective."""
        if bad_ids is None and self._storage.name == "indexed" and self.num_samples is not None:
            known = [c.ids for c in self._storage.chunks if c.ids is not None]
            if known:
                ids = torch.cat([i.reshape(-1).long() for i in known])
                bad = (ids < 0) | (ids >= self.num_samples)
                count = int(bad.sum())
                if count:
                    bad_ids = (count, int(ids[bad].min()), int(ids[bad].max()))
        if bad_ids is not None:
            assert self.num_samples is not None  # only the IndexedStore (num_samples given) checks the ids
            count, lo, hi = bad_ids
            raise ValueError(
                f"Expected `sample_ids` in [0, {self.num_samples - 1}] (num_samples={self.num_samples});"
                f" got {count} id(s) out of range in epoch {self.epoch + 1} (min {lo}, max {hi})."
            )

    def _check_ranks_agree(self, local_error: Exception | None = None) -> bool:
        """One small all-gather of the settings that decide the collectives; True if any rank used positions.

        A rank without batches this epoch agrees with any choice of ids and dtype. It also carries whether a
        rank found an error in its own data (``local_error``), so that every rank raises it, none waits.
        """
        dtype = 0 if self._dtype is None else {torch.float32: 32, torch.float64: 64}.get(self._dtype, 1)
        ids = {None: 0, False: 1, True: 2}[self._positions]
        fields = {
            "storage": {"indexed": 0, "sparse": 1, "moments": 2}[self._storage.name],
            "num_samples": -1 if self.num_samples is None else self.num_samples,
            "store_scores": int(self.store_scores),
            "signals": _signal_code(self.signals),
            "sample_ids (1: given, 2: None)": ids,
            "dtype (bits)": dtype,
        }
        table = _distributed.gather_ints([*fields.values(), int(local_error is not None)], self.process_group)
        _distributed.raise_if_any_rank_failed(local_error, any(row[-1] for row in table), self.process_group)
        problems = []
        for k, name in enumerate(fields):
            values = {rank: row[k] for rank, row in enumerate(table)}
            if name.startswith(("sample_ids", "dtype")):
                values = {rank: v for rank, v in values.items() if v != 0}  # ranks without batches
            if len(set(values.values())) > 1:
                shown = ", ".join(f"rank {rank}: {v}" for rank, v in values.items())
                problems.append(f"{name.split(' ')[0]} ({shown})")
        if problems:
            raise RuntimeError(
                "gwa: torch.distributed ranks disagree on the tracker's settings, so they would "
                f"call different collectives: {'; '.join(problems)}. Create the tracker with the "
                "same arguments on every rank and pass sample_ids on all ranks or on none."
            )
        self._agreed = True
        return any(row[4] == 2 for row in table)

    # -------------------------------------------------------------------------------------------------- state
    def _bind(self, device: torch.device) -> None:
        """Create the epoch's device state on first use, on the first logits' device."""
        if self._device is not None:
            if device != self._device:
                raise ValueError(
                    f"Expected `logits` on {self._device} like the earlier batches; got {device}."
                )
            return
        self._device = device
        self._storage.bind(device)
        if self._pending_state is not None:
            self._load_epoch_state(self._pending_state)
            self._pending_state = None

    def _reset_epoch(self) -> None:
        self._storage = make_storage(*self._storage_args)
        self._device = None
        self._sightings = 0
        self._positions = None
        self._dtype = None
        self._n_unpaired = 0
        self._soft_violations = None
        self._plan = None
        self._last_by_identity = False
        self._deferred = []
        self._deferred_rows = 0  # rows x classes pending
        self._deferred_soft = False
        self._deferred_offset = 0
        self._kept_ids: list[tuple[torch.Tensor, int]] = []  # defer=0: stored ids and their in-place versions

    def state_dict(self) -> dict:
        """Plain values and CPU tensors: settings, epoch counter, history and the partial epoch."""
        self._score_deferred()
        epoch_state = self._pending_state
        if self._device is not None:
            epoch_state = {
                "storage": self._storage.name,
                "sightings": self._sightings,
                "positions": self._positions,
                "dtype": None if self._dtype is None else str(self._dtype).removeprefix("torch."),
                "n_unpaired": self._n_unpaired,
                "soft_violations": None if self._soft_violations is None else self._soft_violations.tolist(),
                "data": self._storage.state_dict(),
            }
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "history": [summary_state(s) for s in self.history],
            "num_samples": self.num_samples,
            "bias": self.bias,
            "signals": list(self.signals),
            "beta": self.beta,
            "epoch_state": epoch_state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (validated: format, settings, counts, shapes); the partial epoch resumes."""
        from gwa.torch._state import validate_state

        epoch_state = validate_state(state, self)
        self.epoch = int(state["epoch"])
        self.history = [summary_from_state(s) for s in state["history"]]
        self._captures.clear()
        self._reset_epoch()
        self._pending_state = epoch_state

    def _load_epoch_state(self, s: dict) -> None:
        assert self._device is not None  # called by _bind(), once the epoch's device is known
        self._sightings = int(s["sightings"])
        self._positions = s["positions"]
        self._dtype = None if s.get("dtype") is None else getattr(torch, s["dtype"])
        self._n_unpaired = int(s["n_unpaired"])
        if s["soft_violations"] is not None:
            self._soft_violations = torch.tensor(s["soft_violations"], dtype=torch.int64, device=self._device)
        self._storage.load_state_dict(s["data"], self._device)

    # --------------------------------------------------------------------------------------------- lifecycle
    def remove(self) -> None:
        """Remove the forward hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._captures.clear()

    def __enter__(self) -> GWATracker:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"gwa: {message}", UserWarning, stacklevel=3)


def _classes(z: torch.Tensor, targets: torch.Tensor, *, soft: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted (argmax of the logits) and given (argmax of soft targets) class ids, copies in class_dtype.

    Used where each batch is scored in its own ``update()`` (``defer=0``); the deferred default takes them
    in :func:`gwa.torch._deferred.score_pending`, once per ``defer`` steps.
    """
    labels = targets.argmax(dim=1) if soft else targets
    dtype = class_dtype(z.shape[1])
    return z.argmax(dim=1).to(dtype), labels.to(dtype)


def _signal_code(signals) -> int:
    from gwa.torch._signals import SIGNAL_NAMES

    return sum(1 << SIGNAL_NAMES.index(s) for s in signals)


def _soft_target_violations(t: torch.Tensor) -> torch.Tensor:
    """``(3,)`` int64 counts of finite rows that are negative, do not sum to 1, are multi-hot (no host read)."""
    finite = torch.isfinite(t).all(dim=1)
    sums = t.sum(dim=1)
    negative = (t.amin(dim=1) < -SOFT_TARGET_ATOL) & finite
    off = ((sums - 1.0).abs() > SOFT_TARGET_ATOL) & finite
    multi_hot = off & ((t == 0) | (t == 1)).all(dim=1)
    return torch.stack((negative, off, multi_hot)).sum(dim=1)


def _raise_soft_target_violations(counts, epoch: int | None = None) -> None:
    negative, off, multi_hot = (int(c) for c in counts)
    if not (negative or off):
        return
    where = f" in epoch {epoch} (checked on the device, read at end_epoch)" if epoch is not None else ""
    if multi_hot:
        raise ValueError(
            f"Expected soft `targets` to be probability rows; got {multi_hot} multi-hot row(s){where} "
            "(several labels set to 1): GWA is defined for softmax cross-entropy, one label or one "
            "probability vector per sample, not for multi-label (BCE) targets."
        )
    if negative:
        raise ValueError(
            f"Expected soft `targets` to be probabilities (>= 0); got {negative} row(s) with negative "
            f"entries{where}."
        )
    raise ValueError(
        f"Expected soft `targets` rows to sum to 1 (probabilities, e.g. label smoothing or mixup); got "
        f"{off} row(s) that do not{where}."
    )


__all__ = ["UNDEFINED_SCORE", "EpochResult", "GWATracker", "IndexedStore", "MomentsOnly", "SparseStore"]
