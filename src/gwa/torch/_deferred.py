"""Deferred scoring, the tracker's default: batches kept by reference and scored together.

``GWATracker.update`` keeps what the kernel needs from each batch (detached references, no copies) as a
:class:`Deferred`; every ``defer``-th call, and ``end_epoch``/``state_dict``, :func:`score_pending` concatenates
the kept batches and scores them in one pass of the fused kernel. The same operations on the same rows as batch by
batch, so the same scores; a step then pays the forward hook's three operations instead of twelve, which is what a
step costs on a CPU (``docs/performance.md``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from gwa.torch._kernel import HeadTerms, Scorer, fused_soft_scores, join_norms, undefined_from_norm
from gwa.torch._signals import compute_signals

#: ``GWATracker(defer=...)`` by default: the batches of 32 consecutive ``update()`` calls are scored together.
#: ``defer=0`` scores each batch in its own ``update()``, which then returns the batch's scores.
DEFAULT_DEFER = 32
#: The kept batches are scored early once they hold this many logits (rows x classes), so that they stay below
#: about ``2 x 4 x DEFER_MAX_ELEMENTS`` bytes (float32 ``z`` and ``-W x``).
DEFER_MAX_ELEMENTS = 1 << 22


def class_dtype(num_classes: int) -> torch.dtype:
    """Storage of the per-sample class ids: int16 (2 bytes a sighting each) up to 32767 classes, else int32."""
    return torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32


class Deferred(NamedTuple):
    """One ``update()`` whose scoring is deferred: what the kernel needs, all detached."""

    logits: torch.Tensor  # (B, C) in the compute dtype
    targets: torch.Tensor  # (B,) class ids or (B, C) probabilities in the compute dtype
    terms: HeadTerms  # from the forward hook (or the explicit path)
    ids: torch.Tensor | None
    versions: tuple  # in-place version counters of (logits, targets, ids) when kept


def owned(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy of it when its memory is not torch's: ``torch.from_numpy(buf)`` of a buffer the loader
    refills each step (FFCV, DALI, hand-written loaders), whose writes do not bump the version counter that the
    in-place check reads. Torch's own storage is resizable; a worker's batch in shared memory is torch's too.
    Checking costs about 0.3 us per tensor; copying is paid only by such buffers."""
    try:
        if t.untyped_storage().resizable() or t.is_shared():
            return t
    except (
        RuntimeError,
        NotImplementedError,
    ):  # a tensor without plain storage (a wrapper subclass): as given
        return t
    return t.clone()


def versions(logits: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor | None) -> tuple:
    """In-place version counters of the tensors a deferred batch keeps by reference."""
    return (logits._version, targets._version, None if ids is None else ids._version)


class Scored(NamedTuple):
    """The kept batches scored: what goes into one storage chunk."""

    scores: torch.Tensor
    undefined: torch.Tensor  # bool
    signals: dict
    ids: torch.Tensor | None
    predictions: torch.Tensor | None  # argmax of the logits (class_dtype); None when ``classes`` is False
    labels: torch.Tensor | None  # the given class ids (argmax of soft targets), class_dtype


def score_pending(
    pending: list[Deferred], *, soft: bool, scorer: Scorer, signals, classes: bool = False
) -> Scored:
    """Scores, undefined marks, signal values, ids and (``classes``) predicted/given classes of the kept batches.

    One pass of the kernel; with ``classes``, one argmax (and one for soft targets) and two casts to
    :func:`class_dtype` over the concatenated rows: per ``defer`` steps, not per step.

    Raises:
        RuntimeError: a kept logits, targets or ids tensor was changed in place after its ``update()``.
        ValueError: a class id out of range (reported here, when its batch is scored).
    """
    for item in pending:
        if versions(item.logits, item.targets, item.ids) != item.versions:
            raise RuntimeError(
                "gwa: a tensor given to update() (logits, targets or sample_ids) was modified in place "
                "before its batch was scored (GWATracker(defer=...) keeps references, not copies). "
                "Pass tensors that are not modified afterwards, or use defer=0."
            )

    def cat(tensors):
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

    z = cat([d.logits for d in pending])
    targets = cat([d.targets for d in pending])
    terms = HeadTerms(cat([d.terms.neg_head_out for d in pending]), join_norms([d.terms for d in pending]))
    # One batch alone would be stored by reference until end_epoch, past the version check above: copy it.
    ids = None if pending[0].ids is None else torch.cat([d.ids for d in pending if d.ids is not None])
    if soft:
        scores, undefined = fused_soft_scores(z, targets, terms)
    else:
        scores, undefined = scorer.score_ids(z, targets, terms), undefined_from_norm(terms.norm)
    values = compute_signals(z, targets, signals, soft=soft) if signals else {}
    predictions = labels = None
    if classes:
        dtype = class_dtype(z.shape[1])
        predictions = z.argmax(dim=1).to(dtype)
        labels = (targets.argmax(dim=1) if soft else targets).to(dtype)
    return Scored(scores, undefined, values, ids, predictions, labels)
