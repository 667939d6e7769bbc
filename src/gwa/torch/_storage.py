"""The tracker's three storage strategies and their typed epoch result.

* :class:`IndexedStore` (``num_samples`` given): per-sample scores indexed by sample id, duplicates resolved.
* :class:`SparseStore` (no ``num_samples``, scores stored): sorted unique ids and their scores.
* :class:`MomentsOnly` (``store_scores=False``, no ``num_samples``): O(1) memory, streaming power sums.

The two stores keep each step's tensors as they are (a list append, no tensor operation per step) and resolve
duplicates once, at the end of the epoch: the first finite sighting of an id counts. When the ids of an epoch
are unique (a shuffling sampler), that resolution finds nothing to drop; when they repeat (padding, sampling
with replacement, a restarted loader), it keeps first sightings exactly as a per-step bookkeeping would. Each
strategy's :meth:`finish` reads the device once and returns an :class:`EpochTally`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

import torch
from gwa._moments import EMPTY, MomentState, batch_state
from gwa.torch import _distributed
from gwa.torch._accumulate import EpochSums

#: Version of :meth:`Storage.state_dict` (and of the tracker's state dict that embeds it).
STATE_FORMAT = 2
_NEVER = torch.iinfo(torch.int64).max


@dataclass
class EpochTally:
    """What a storage strategy hands back at the end of an epoch (host values)."""

    state: MomentState
    n_undefined: int = 0
    n_non_finite: int = 0
    n_duplicates: int = 0
    scores: np.ndarray | None = None
    sample_ids: np.ndarray | None = None
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    bad_ids: tuple[int, int, int] | None = None  # (count, min, max) of sample ids outside [0, num_samples)
    predictions: np.ndarray | None = None  # int64 argmax of the logits, same layout as scores (-1: unseen)
    labels: np.ndarray | None = None  # int64 given class ids, same layout as scores (-1: unseen)


class Chunk(NamedTuple):
    """One ``update()`` (or the deferred batches scored together): the ids (None: running positions from
    ``offset``), scores, the bool mask of undefined cosines, signals, and (when per-class evidence is kept) the
    predicted and given class ids."""

    ids: torch.Tensor | None
    offset: int
    scores: torch.Tensor
    undefined: torch.Tensor
    signals: dict[str, torch.Tensor]
    predictions: torch.Tensor | None = None
    labels: torch.Tensor | None = None


#: Keys under which the predicted and given classes ride with the signals through the end-of-epoch reduction.
_PREDICTION, _LABEL = "\0prediction", "\0label"


class Storage:
    """Base of the strategies: collects :class:`Chunk`s or sums during the epoch, reduces them at the end."""

    name = "storage"
    keeps_ids = True

    def __init__(self, signals: tuple[str, ...], score_dtype: torch.dtype, classes: bool = False):
        self.signal_names = signals
        self.score_dtype = score_dtype
        self.classes = classes  # keep the predicted and given classes (every rank alike: same collectives)
        self.chunks: list[Chunk] = []

    def add(self, chunk: Chunk) -> None:
        if (
            self.score_dtype == torch.float16
        ):  # compact storage: 11 instead of 17 bytes per sighting, 3 ops per step
            ids = chunk.ids
            num_samples = getattr(self, "num_samples", None)  # IndexedStore: ids below it may fit int32
            if ids is not None and num_samples is not None and num_samples < 2**31:
                # Saturate, not wrap: 2**32 + 3 stays out of range (reported at finish), never sample 3.
                ids = ids.clamp(-(2**31), 2**31 - 1).to(torch.int32)
            chunk = chunk._replace(
                ids=ids,
                scores=chunk.scores.to(self.score_dtype),
                signals={k: v.to(self.score_dtype) for k, v in chunk.signals.items()},
            )
        self.chunks.append(chunk)

    def bind(self, device: torch.device) -> None:
        """Create any device state on the device of the first batch."""

    def finish(self, *, distributed: bool, positions: bool, group=None) -> EpochTally:
        raise NotImplementedError

    def nbytes(self) -> int:
        """Bytes of device memory the epoch's per-sample data holds now (ids, scores, undefined, signals)."""
        return sum(
            t.nbytes
            for c in self.chunks
            for t in (c.ids, c.scores, c.undefined, *c.signals.values(), c.predictions, c.labels)
            if t is not None
        )

    # -- shared by the two stores --------------------------------------------------------------------------
    def _concatenate(self, device: torch.device):
        """The epoch's sightings on the device: ids, scores (float64), undefined, signals (float32).

        With ``classes``, the predicted and given classes join the signals (as float64, exact; NaN for a chunk
        without them, from an older state) under private keys; :func:`_pop_classes` takes them out again.
        """
        chunks = self.chunks
        if not chunks:
            empty = torch.zeros(0, device=device)
            signals = {k: empty.float() for k in self.signal_names}
            if self.classes:
                signals[_PREDICTION] = signals[_LABEL] = empty.double()
            return (empty.long(), empty.double(), empty.bool(), signals)
        ids = torch.cat(
            [
                c.ids.long()
                if c.ids is not None
                else torch.arange(c.offset, c.offset + c.scores.shape[0], device=c.scores.device)
                for c in chunks
            ]
        )
        scores = torch.cat([c.scores for c in chunks]).double()
        undefined = torch.cat([c.undefined for c in chunks])
        signals = {k: torch.cat([c.signals[k] for c in chunks]).float() for k in self.signal_names}
        if self.classes:
            for key, field_name in ((_PREDICTION, "predictions"), (_LABEL, "labels")):
                parts = [getattr(c, field_name) for c in chunks]
                signals[key] = torch.cat(
                    [
                        torch.full(c.scores.shape, float("nan"), dtype=torch.float64, device=c.scores.device)
                        if p is None
                        else p.double()
                        for c, p in zip(chunks, parts, strict=True)
                    ]
                )
        return ids, scores, undefined, signals

    @staticmethod
    def _first_sightings(ids: torch.Tensor, finite: torch.Tensor, size: int) -> torch.Tensor:
        """Mask of the sightings that are the first finite one of their id (``ids`` in ``[0, size)``)."""
        position = torch.arange(ids.shape[0], device=ids.device).masked_fill_(~finite, _NEVER)
        owner = torch.full((size,), _NEVER, dtype=torch.int64, device=ids.device)
        owner.scatter_reduce_(0, ids, position, reduce="amin")
        return (owner[ids] == position) & finite

    def state_dict(self) -> dict:
        return {
            "chunks": [
                (
                    None if c.ids is None else c.ids.cpu(),
                    c.offset,
                    c.scores.cpu(),
                    c.undefined.cpu(),
                    {k: v.cpu() for k, v in c.signals.items()},
                    *(
                        ()
                        if c.predictions is None or c.labels is None
                        else (c.predictions.cpu(), c.labels.cpu())
                    ),
                )
                for c in self.chunks
            ]
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        # A chunk is (ids, offset, scores, undefined, signals) or, with the classes, (..., predictions, labels).
        self.chunks = [
            Chunk(
                None if c[0] is None else c[0].to(device),
                int(c[1]),
                c[2].to(device),
                c[3].to(device),
                {k: v.to(device) for k, v in c[4].items()},
                *((c[5].to(device), c[6].to(device)) if len(c) == 7 else ()),
            )
            for c in state["chunks"]
        ]


class IndexedStore(Storage):
    """Scores by sample id in ``[0, num_samples)``; NaN where a sample was not seen."""

    name = "indexed"

    def __init__(
        self, num_samples: int, signals: tuple[str, ...], score_dtype: torch.dtype, classes: bool = False
    ):
        super().__init__(signals, score_dtype, classes)
        self.num_samples = num_samples

    def finish(self, *, distributed: bool, positions: bool, group=None) -> EpochTally:
        device = self.chunks[0].scores.device if self.chunks else torch.device("cpu")
        ids, scores, undefined, signals = self._concatenate(device)
        n = self.num_samples
        bad = (ids < 0) | (ids >= n)
        n_bad = int(bad.sum())
        if n_bad:
            return EpochTally(EMPTY, bad_ids=(n_bad, int(ids[bad].min()), int(ids[bad].max())))
        finite = ~scores.isnan()
        keep = self._first_sightings(ids, finite, n)
        n_non_finite = int((~finite).sum())
        n_duplicates = ids.shape[0] - n_non_finite - int(keep.sum())
        # Dense per-sample arrays on the device: NaN (not seen) except where a first sighting wrote.
        slot = ids.masked_fill(~keep, n)  # rows that must not be written go to a spare last slot
        dense = {}
        for name, values in (
            ("score", scores),
            ("undefined", undefined.double()),
            *((k, v.double()) for k, v in signals.items()),
        ):
            dense[name] = torch.full((n + 1,), float("nan"), dtype=torch.float64, device=device)
            dense[name].index_put_((slot,), values)
        seen = ~dense["score"][:-1].isnan()
        if distributed and not positions:
            host, n_duplicates, n_non_finite = _distributed.reduce_store(
                dict(dense.items()), seen, n_duplicates, n_non_finite, group
            )
        else:
            host = {k: v[:-1].cpu().numpy() for k, v in dense.items()}
        valid = ~np.isnan(host["score"])
        undefined_host = np.nan_to_num(host["undefined"]) > 0.5
        predictions, labels = _pop_classes(host)
        tally = EpochTally(
            batch_state(host["score"][valid]),
            int(undefined_host[valid].sum()),
            n_non_finite,
            n_duplicates,
            host["score"].astype(np.float32),
            signals={k: host[k].astype(np.float32) for k in self.signal_names},
            predictions=predictions,
            labels=labels,
        )
        if distributed and positions:
            _merge_counts_across_ranks(tally, group)
        return tally


class SparseStore(Storage):
    """Sorted unique sample ids and their scores (no ``num_samples``)."""

    name = "sparse"

    def finish(self, *, distributed: bool, positions: bool, group=None) -> EpochTally:
        device = self.chunks[0].scores.device if self.chunks else torch.device("cpu")
        ids, scores, undefined, signals = self._concatenate(device)
        ids, scores = ids.cpu().numpy().astype(np.int64), scores.cpu().numpy()
        undefined = undefined.cpu().numpy().astype(bool)
        signals = {k: v.cpu().numpy() for k, v in signals.items()}
        if distributed and not positions:
            ids, scores, undefined, signals = _distributed.gather_chunks(
                ids, scores, undefined, signals, group
            )
        finite = ~np.isnan(scores)  # NaN marks non-finite inputs: not a sighting of the id
        n_non_finite = int((~finite).sum())
        ids, scores, undefined = ids[finite], scores[finite], undefined[finite]
        signals = {k: v[finite] for k, v in signals.items()}
        _, first = np.unique(ids, return_index=True)  # sorted unique ids, index of each one's first sighting
        predictions, labels = _pop_classes(
            {k: v[first] for k, v in signals.items() if k in (_PREDICTION, _LABEL)}
        )
        tally = EpochTally(
            batch_state(scores[first]),
            int(undefined[first].sum()),
            n_non_finite,
            len(ids) - len(first),
            scores[first].astype(np.float32),
            ids[first],
            {k: v[first].astype(np.float32) for k, v in signals.items() if k in self.signal_names},
            predictions=predictions,
            labels=labels,
        )
        if distributed and positions:
            _merge_counts_across_ranks(tally, group)
        return tally


class MomentsOnly(Storage):
    """Only the epoch's moments, from float64 power sums on the device (float32 on mps): O(1) memory."""

    name = "moments"
    keeps_ids = False

    def __init__(self, signals: tuple[str, ...] = (), score_dtype: torch.dtype = torch.float32):
        super().__init__((), score_dtype)
        self.sums: EpochSums | None = None

    def bind(self, device: torch.device) -> None:
        self.sums = EpochSums(device)

    def add(self, chunk: Chunk) -> None:
        nonfinite = chunk.scores.isnan()
        assert self.sums is not None  # the tracker binds the storage before its first add()
        self.sums.add(chunk.scores, chunk.undefined, ~nonfinite, nonfinite)

    def finish(self, *, distributed: bool, positions: bool, group=None) -> EpochTally:
        if self.sums is None:
            self.bind(torch.device("cpu"))
        assert self.sums is not None  # bind() created it
        state = self.sums.to_state()
        _, n_undefined, n_non_finite = self.sums.counts.cpu().tolist()
        tally = EpochTally(state, n_undefined, n_non_finite)
        if distributed:
            _merge_counts_across_ranks(tally, group)
        return tally

    def nbytes(self) -> int:
        """Bytes of the streaming state (power sums, counts, shift): constant."""
        if self.sums is None:
            return 0
        return sum(t.nbytes for t in (self.sums.sums, self.sums.counts, self.sums.shift) if t is not None)

    def state_dict(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.bind(device)
        assert self.sums is not None  # bind() created it
        if state["sums"] is not None:
            self.sums.load_state_dict(state["sums"])


def _pop_classes(host: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Take the predicted and given classes out of a host dict: int64 arrays, -1 where unseen (NaN)."""
    out = []
    for key in (_PREDICTION, _LABEL):
        values = host.pop(key, None)
        out.append(None if values is None else np.where(np.isnan(values), -1, values).astype(np.int64))
    return out[0], out[1]


def _merge_counts_across_ranks(tally: EpochTally, group) -> None:
    """Moments merged in rank order and counts summed (per-sample arrays stay per rank)."""
    tally.state = _distributed.merge_moment_states(tally.state, group)
    tally.n_undefined, tally.n_non_finite, tally.n_duplicates = _distributed.sum_ints(
        [tally.n_undefined, tally.n_non_finite, tally.n_duplicates], group
    )


def make_storage(
    num_samples: int | None,
    store_scores: bool,
    signals: tuple[str, ...],
    score_dtype: torch.dtype,
    classes: bool = False,
) -> Storage:
    if num_samples is not None:
        return IndexedStore(num_samples, signals, score_dtype, classes)
    if store_scores:
        return SparseStore(signals, score_dtype, classes)
    return MomentsOnly()
