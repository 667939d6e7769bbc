"""The tracker's per-epoch buffer: deferral, scoring, storage, sample ids, and the ranks' agreement at the end.

:class:`EpochBuffer` holds one epoch of :class:`gwa.torch.GWATracker`; the tracker makes a new one per epoch.
:meth:`EpochBuffer.add` is the one scoring path of a checked batch: the tracker's checked ``update()`` calls it
after its checks, its fast path after matching the call against the :class:`Plan` of the last checked one. With
``defer`` it keeps the batch (detached references) and scores the kept batches together
(:func:`gwa.torch._deferred.score_pending`); with ``defer=0`` it scores the batch at once. Each scored chunk goes
to the storage (:mod:`gwa.torch._storage`), which resolves duplicate ids once, at :meth:`EpochBuffer.finish`.
What a state dict carries of the epoch besides the storage is :class:`EpochCounts`, declared once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch
from gwa.torch import _distributed
from gwa.torch._checks import (
    ids_out_of_range,
    invalid_state,
    raise_ids_out_of_range,
    raise_soft_target_violations,
    state_count,
)
from gwa.torch._deferred import (
    DEFER_MAX_ELEMENTS,
    Deferred,
    class_dtype,
    owned,
    score_pending,
    versions,
)
from gwa.torch._kernel import HeadTerms, Scorer, fused_soft_scores, undefined_from_norm
from gwa.torch._signals import SIGNAL_NAMES, compute_signals
from gwa.torch._storage import Chunk, EpochTally, Storage, make_storage


class Plan(NamedTuple):
    """What a checked ``update()`` saw and :meth:`EpochBuffer.add` needs; a later call that matches it (hard
    labels, logits by identity) skips the checks."""

    logits_shape: torch.Size
    targets_shape: torch.Size
    targets_dtype: torch.dtype
    device_index: int  # Tensor.get_device(): -1 on CPU
    positions: bool  # no sample ids: running positions
    keeps_ids: bool  # the storage keeps ids
    soft: bool
    signals: bool  # signals are computed and stored


def admits(plan: Plan, logits: torch.Tensor, targets, sample_ids) -> bool:
    """True when a call's inputs are like those of the checked call that recorded ``plan`` in everything its
    checks read (shapes, dtypes, devices, ids given or not), so that the checks would pass again."""
    return (
        logits.shape == plan.logits_shape
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
    )


def _check_positions(value) -> None:
    if value not in (None, True, False):
        invalid_state("`epoch_state.positions` None/True/False", value)


def _check_dtype(value) -> None:
    if value not in (None, "float32", "float64"):
        invalid_state("`epoch_state.dtype` None, 'float32' or 'float64'", value)


def _check_violations(value) -> None:
    if value is not None and (
        not isinstance(value, list)
        or len(value) != 3
        or any(state_count("soft_violations", v) is None for v in value)
    ):
        invalid_state("`epoch_state.soft_violations` None or 3 counts", value)


def _saved(check, save=lambda v: v, load=lambda v, device: v) -> dict:
    """How a field of :class:`EpochCounts` is checked, saved and loaded (its ``metadata``)."""
    return {"check": check, "save": save, "load": load}


@dataclass
class EpochCounts:
    """The epoch's counters that ``state_dict()["epoch_state"]`` carries, each declared once, here."""

    sightings: int = field(
        default=0,
        metadata=_saved(lambda v: state_count("epoch_state.sightings", v), load=lambda v, d: int(v)),
    )
    positions: bool | None = field(  # None: no update yet; True: running positions; False: sample ids
        default=None, metadata=_saved(_check_positions)
    )
    dtype: torch.dtype | None = field(  # compute dtype of the epoch's scores
        default=None,
        metadata=_saved(
            _check_dtype,
            save=lambda v: None if v is None else str(v).removeprefix("torch."),
            load=lambda v, d: None if v is None else getattr(torch, v),
        ),
    )
    n_unpaired: int = field(
        default=0,
        metadata=_saved(lambda v: state_count("epoch_state.n_unpaired", v), load=lambda v, d: int(v)),
    )
    soft_violations: torch.Tensor | None = field(  # counts recorded on the device, read at end_epoch
        default=None,
        metadata=_saved(
            _check_violations,
            save=lambda v: None if v is None else v.tolist(),
            load=lambda v, d: None if v is None else torch.tensor(v, dtype=torch.int64, device=d),
        ),
    )

    def state_dict(self) -> dict:
        return {f.name: f.metadata["save"](getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def check_state(cls, state: dict) -> None:
        for f in fields(cls):
            f.metadata["check"](state.get(f.name))

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> EpochCounts:
        return cls(**{f.name: f.metadata["load"](state.get(f.name), device) for f in fields(cls)})


@dataclass(frozen=True)
class EpochSettings:
    """The tracker's settings that decide how an epoch is buffered (the same for every epoch)."""

    num_samples: int | None
    store_scores: bool
    signals: tuple[str, ...]
    score_dtype: torch.dtype
    keep_classes: bool  # per-sample predicted and given classes (per-class evidence), with the scores
    defer: int
    scorer: Scorer


class EpochBuffer:
    """One epoch of the tracker: the batches kept for deferred scoring, the storage, the counts.

    ``pending_state``: a partial epoch from ``load_state_dict``, loaded on the device of the first batch.
    """

    def __init__(self, settings: EpochSettings, pending_state: dict | None = None):
        self.settings = settings
        self._reset()
        self._pending_state = pending_state

    def _reset(self) -> None:
        s = self.settings
        self.storage: Storage = make_storage(
            s.num_samples, s.store_scores, s.signals, s.score_dtype, s.keep_classes
        )
        self.device: torch.device | None = None
        self.counts = EpochCounts()
        self._deferred: list[Deferred] = []  # batches kept, not yet scored
        self._deferred_rows = 0  # their logits' elements (rows x classes)
        self._deferred_soft = False  # their targets are probabilities
        self._deferred_offset = 0  # running position of their first sample
        self._kept_ids: list[tuple[torch.Tensor, int]] = []  # defer=0: stored ids and their in-place versions

    def bind(self, device: torch.device) -> None:
        """Create the epoch's device state on first use, on the first logits' device."""
        if self.device is not None:
            if device != self.device:
                raise ValueError(
                    f"Expected `logits` on {self.device} like the earlier batches; got {device}."
                )
            return
        self.device = device
        self.storage.bind(device)
        if self._pending_state is not None:
            self.counts = EpochCounts.from_state(self._pending_state, device)
            self.storage.load_state_dict(self._pending_state["data"], device)
            self._pending_state = None

    # ------------------------------------------------------------------------------------------------- batches
    def add(self, plan: Plan, logits: torch.Tensor, targets: torch.Tensor, ids, terms: HeadTerms):
        """Score (or keep, with ``defer``) one batch whose inputs passed the checks ``plan`` records.

        ``targets``: class ids, or probabilities in the compute dtype. ``ids``: ``(B,)`` int64 sample ids on the
        logits' device (ignored with ``plan.positions`` or a storage without ids). Returns the batch's scores with
        ``defer=0``, else None.
        """
        s = self.settings
        z = logits.detach()
        if z.dtype is not terms.neg_head_out.dtype:
            z = z.to(terms.neg_head_out.dtype)
        if plan.positions or not plan.keeps_ids:
            ids = None
        counts = self.counts
        counts.positions = plan.positions
        counts.dtype = terms.neg_head_out.dtype
        if s.defer:
            targets = owned(targets)  # kept by reference: a refilled numpy buffer is copied
            ids = None if ids is None else owned(ids)
            self._defer(Deferred(z, targets, terms, ids, versions(z, targets, ids)), plan.soft)
            return None
        if plan.soft:
            scores, undefined = fused_soft_scores(z, targets, terms)
        else:
            scores, undefined = s.scorer.score_ids(z, targets, terms), undefined_from_norm(terms.norm)
        values = compute_signals(logits, targets, s.signals, soft=plan.soft) if plan.signals else {}
        kept_ids = None if ids is None else self._keep_ids(ids)
        classes = _classes(z, targets, soft=plan.soft) if s.keep_classes else ()
        self.storage.add(Chunk(kept_ids, counts.sightings, scores, undefined, values, *classes))
        counts.sightings += scores.shape[0]
        return scores

    def skip(self, batch: int) -> None:
        """An ``update()`` whose forward pass could not be identified (``unpaired="skip"``)."""
        self.counts.n_unpaired += batch

    def record_soft_violations(self, violations: torch.Tensor, first: bool) -> None:
        """Soft-target violations of one batch: raised at once for the epoch's first, else read at the end."""
        if first:
            raise_soft_target_violations(violations.tolist())
        elif self.counts.soft_violations is None:
            self.counts.soft_violations = violations
        else:
            self.counts.soft_violations += violations

    def _keep_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids stored until end_epoch (``defer=0``): a numpy buffer's copied, a tensor's in-place version noted."""
        ids = owned(ids)
        self._kept_ids.append((ids, ids._version))
        return ids

    def _defer(self, item: Deferred, soft: bool) -> None:
        """Keep one batch for later scoring; score the pending ones when ``defer`` are pending or they are large."""
        pending = self._deferred
        if pending and (
            soft is not self._deferred_soft
            or item.logits.dtype is not pending[0].logits.dtype
            or item.logits.shape[1] != pending[0].logits.shape[1]
        ):
            self.score_deferred()  # one kernel call needs one kind of targets, dtype and class count
            pending = self._deferred
        if not pending:
            self._deferred_soft = soft
            self._deferred_offset = self.counts.sightings
        pending.append(item)
        self.counts.sightings += item.logits.shape[0]
        self._deferred_rows += item.logits.numel()
        if len(pending) >= self.settings.defer or self._deferred_rows >= DEFER_MAX_ELEMENTS:
            self.score_deferred()

    def score_deferred(self) -> None:
        """Score the pending batches in one pass of the kernel and add them to the storage as one chunk."""
        pending = self._deferred
        if not pending:
            return
        self._deferred = []
        self._deferred_rows = 0
        s = self.settings
        scored = score_pending(
            pending,
            soft=self._deferred_soft,
            scorer=s.scorer,
            signals=s.signals if s.store_scores else (),
            classes=s.keep_classes,
        )
        self.storage.add(
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

    # --------------------------------------------------------------------------------------------------- finish
    def finish(self, epoch: int, group, warn_once: Callable[[str, str], None]) -> EpochTally:
        """Score what is kept, check what the device recorded, agree across ranks, reduce the storage.

        ``epoch``: the 1-based number of this epoch, for the error messages.
        """
        self.score_deferred()
        distributed = _distributed.is_active(group)
        local_error = None  # under torch.distributed, raised on every rank after the first all-gather
        try:
            if any(ids._version != version for ids, version in self._kept_ids):
                self._reset()
                raise RuntimeError(
                    "gwa: a sample_ids tensor given to update() was modified in place before end_epoch() (with "
                    "defer=0 the ids are kept by reference until then), so the epoch's scores cannot be placed. "
                    "Pass ids that are not refilled afterwards (e.g. ids.clone())."
                )
            if self.counts.soft_violations is not None:
                raise_soft_target_violations(self.counts.soft_violations.tolist(), epoch=epoch)
            if distributed:
                self._raise_bad_ids(epoch)
        except (ValueError, RuntimeError) as exc:
            if not distributed:
                raise
            local_error = exc
        positions = bool(self.counts.positions)
        if distributed:
            positions = self._check_ranks_agree(group, local_error)
            if positions and self.settings.store_scores and self.storage.keeps_ids:
                warn_once(
                    "dist-positions",
                    "update() got no sample_ids under torch.distributed: moments "
                    "are merged across ranks, per-sample scores by position stay per rank.",
                )
        tally = self.storage.finish(distributed=distributed, positions=positions, group=group)
        if tally.bad_ids is not None:
            self._raise_bad_ids(epoch, tally.bad_ids)
        return tally

    def _raise_bad_ids(self, epoch: int, bad_ids: tuple[int, int, int] | None = None) -> None:
        """Raise when the epoch's sample ids (of the indexed store) leave ``[0, num_samples)``; without
        ``bad_ids`` they are checked here (one device sync), before any collective."""
        num_samples = self.settings.num_samples
        if bad_ids is None and self.storage.name == "indexed" and num_samples is not None:
            bad_ids = ids_out_of_range([c.ids for c in self.storage.chunks if c.ids is not None], num_samples)
        if bad_ids is not None:
            assert num_samples is not None  # only the IndexedStore (num_samples given) checks the ids
            raise_ids_out_of_range(bad_ids, num_samples, epoch)

    def _check_ranks_agree(self, group, local_error: Exception | None = None) -> bool:
        """One small all-gather of the settings that decide the collectives; True if any rank used positions.

        A rank without batches this epoch agrees with any choice of ids and dtype. It also carries whether a
        rank found an error in its own data (``local_error``), so that every rank raises it, none waits.
        """
        s, counts = self.settings, self.counts
        dtype = 0 if counts.dtype is None else {torch.float32: 32, torch.float64: 64}.get(counts.dtype, 1)
        fields = {
            "storage": {"indexed": 0, "sparse": 1, "moments": 2}[self.storage.name],
            "num_samples": -1 if s.num_samples is None else s.num_samples,
            "store_scores": int(s.store_scores),
            "signals": sum(1 << SIGNAL_NAMES.index(name) for name in s.signals),
            "sample_ids (1: given, 2: None)": {None: 0, False: 1, True: 2}[counts.positions],
            "dtype (bits)": dtype,
        }
        table = _distributed.gather_ints([*fields.values(), int(local_error is not None)], group)
        _distributed.raise_if_any_rank_failed(local_error, any(row[-1] for row in table), group)
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
        return any(row[4] == 2 for row in table)

    # ---------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict | None:
        """The partial epoch as plain values and CPU tensors (None before its first batch)."""
        self.score_deferred()
        if self.device is None:
            return self._pending_state
        return {"storage": self.storage.name, **self.counts.state_dict(), "data": self.storage.state_dict()}


def _classes(z: torch.Tensor, targets: torch.Tensor, *, soft: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted (argmax of the logits) and given (argmax of soft targets) class ids, copies in class_dtype.

    Used where each batch is scored in its own ``update()`` (``defer=0``); the deferred default takes them
    in :func:`gwa.torch._deferred.score_pending`, once per ``defer`` steps.
    """
    labels = targets.argmax(dim=1) if soft else targets
    dtype = class_dtype(z.shape[1])
    return z.argmax(dim=1).to(dtype), labels.to(dtype)
