"""What an epoch of :class:`gwa.torch.GWATracker` gives back, and its summaries as checkpointable plain values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from gwa import ClassEvidence, class_evidence
from gwa._summary import EpochSummary
from gwa.torch._storage import EpochTally


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
        n_unpaired: samples of ``update()`` calls skipped because their forward pass could not be identified
            (only with ``unpaired="skip"``).
        predictions: int64 predicted class (argmax of the logits of the scored forward pass) per sample, same
            layout as :attr:`scores`, -1 where unseen. None if scores are not stored.
        labels: int64 given class per sample (the class id passed to ``update()``; the argmax of soft
            targets), same layout as :attr:`scores`, -1 where unseen. None if scores are not stored.
        class_evidence: the epoch's :class:`gwa.ClassEvidence` (per given label: the alignment's moments, the
            negative share, the (given, predicted) counts of negatively aligned samples), from :attr:`scores`,
            :attr:`labels` and :attr:`predictions` of the samples seen; None if scores are not stored. Under
            ``torch.distributed`` without sample ids, of this rank's samples only.
    """

    epoch: int
    summary: EpochSummary
    scores: np.ndarray | None
    sample_ids: np.ndarray | None = None
    signals: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    n_duplicates: int = 0
    n_non_finite: int = 0
    n_unpaired: int = 0
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_evidence: ClassEvidence | None = None


def epoch_result(
    epoch: int,
    summary: EpochSummary,
    tally: EpochTally,
    n_unpaired: int,
    stored: bool,
    num_classes: int | None,
) -> EpochResult:
    """The :class:`EpochResult` of a storage's tally; the per-sample arrays only when scores are ``stored``."""
    return EpochResult(
        epoch=epoch,
        summary=summary,
        scores=tally.scores if stored else None,
        sample_ids=tally.sample_ids,
        signals=tally.signals if stored else {},
        n_duplicates=int(tally.n_duplicates),
        n_non_finite=int(tally.n_non_finite),
        n_unpaired=n_unpaired,
        predictions=tally.predictions if stored else None,
        labels=tally.labels if stored else None,
        class_evidence=evidence_of_epoch(tally.scores, tally.labels, tally.predictions, num_classes)
        if stored
        else None,
    )


def evidence_of_epoch(scores, labels, predictions, num_classes: int | None) -> ClassEvidence | None:
    """:func:`gwa.class_evidence` over the samples seen (finite score, known label and prediction); O(N + C^2)."""
    if scores is None or labels is None or predictions is None or num_classes is None or num_classes < 2:
        return None
    seen = np.isfinite(scores) & (labels >= 0) & (predictions >= 0)
    return class_evidence(scores[seen], labels[seen], predictions[seen], num_classes)


def summary_state(summary: EpochSummary) -> dict:
    """The summary's fields as plain values (``torch.load(weights_only=True)`` admits no enums or classes)."""
    out = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    guard = out.get("guard")
    if guard is not None and not isinstance(guard, str):  # a structured guard: a code and a message
        out["guard"] = {"code": str(getattr(guard.code, "value", guard.code)), "message": str(guard.message)}
    return out


def summary_from_state(state: dict) -> EpochSummary:
    state = dict(state)
    guard = state.get("guard")
    if isinstance(guard, dict):
        from gwa import _summary

        structured = getattr(_summary, "Guard", None)
        state["guard"] = (
            structured(_summary.GuardCode(guard["code"]), guard["message"])
            if structured is not None
            else guard["message"]
        )
    return EpochSummary(**state)
