"""Per-class evidence through the after-epoch paths, in one place for every surface.

:class:`gwa.integrations.EpochMonitor`, the after-epoch step of every surface (``gwa train``, the Lightning and
Hugging Face callbacks, ``RunRecorder``), hands each epoch's :class:`gwa.ClassEvidence` to a :class:`ClassLog`: it
writes the epoch's row of ``classes.jsonl``, gives the stopper its rows with the evidence (the class-aware candidates
of the veto read it), and at the end gives the noise map (:func:`gwa.policy.noise_map_of_run`) and its
``summary.json`` entry. :func:`epoch_evidence` computes the evidence from per-sample arrays (the JAX backend; the
torch tracker computes it itself, :attr:`gwa.torch.EpochResult.class_evidence`).
"""

from __future__ import annotations

import numpy as np

from gwa import ClassEvidence, class_evidence, policy
from gwa.rundir import class_row

#: The key under which the stopper's rows carry the epoch's evidence (what :mod:`gwa.policy` reads).
EVIDENCE_KEY = "class_evidence"


def epoch_evidence(scores, labels, predictions, num_classes: int | None) -> ClassEvidence | None:
    """:func:`gwa.class_evidence` over the samples seen in the epoch (finite score, known label and prediction).

    ``predictions`` may be float with NaN (a stored ``pred`` signal) or int with -1 for unseen samples. None when
    an array or ``num_classes`` is missing, or fewer than two classes.
    """
    if scores is None or labels is None or predictions is None or num_classes is None or num_classes < 2:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    predictions = np.asarray(predictions, dtype=np.float64)
    seen = np.isfinite(scores) & np.isfinite(predictions) & (predictions >= 0) & (labels >= 0)
    return class_evidence(
        scores[seen], labels[seen].astype(np.int64), predictions[seen].astype(np.int64), int(num_classes)
    )


class ClassLog:
    """The run's per-epoch class evidence (None for an epoch without it); see the module docstring."""

    def __init__(self) -> None:
        self.records: list[ClassEvidence | None] = []

    def add(self, epoch: int, evidence: ClassEvidence | None, writer=None) -> None:
        """Record epoch ``epoch``'s evidence (after its metrics row) and write its ``classes.jsonl`` row."""
        del self.records[epoch - 1 :]  # a resumed run redoes its later epochs
        self.records += [None] * (epoch - 1 - len(self.records)) + [evidence]
        if evidence is not None and writer is not None and hasattr(writer, "log_classes"):
            writer.log_classes(class_row(epoch, evidence))

    def stopper_row(self, row: dict, evidence: ClassEvidence | None) -> dict:
        """The row the stopper sees: the metrics row with the evidence (as plain values: its state stays JSON)."""
        return row if evidence is None else {**row, EVIDENCE_KEY: evidence.to_dict()}

    @property
    def evidence(self) -> list[ClassEvidence] | None:
        """One record per epoch, or None when some epoch has none."""
        if not self.records or any(r is None for r in self.records):
            return None
        return [r for r in self.records if r is not None]

    def noise_map(self, rows: list[dict], total_epochs: int | None) -> policy.NoiseMap | None:
        records = self.evidence
        if records is None or len(records) != len(rows):
            return None
        return policy.noise_map_of_run(rows, records, total_epochs=total_epochs)

    def state_dict(self) -> list:
        return [None if r is None else r.to_dict() for r in self.records]

    def load_state_dict(self, state) -> None:
        if not isinstance(state, list):
            raise ValueError(f"Expected the class log's state as a list; got {type(state).__name__}.")
        self.records = [None if r is None else ClassEvidence.from_dict(r) for r in state]


def noise_estimate(noise_map: policy.NoiseMap | None, class_names=None) -> dict:
    """``summary.json``'s ``noise_estimate`` entry: the map's values and its one-line description ({} if none)."""
    if noise_map is None:
        return {}
    return {"noise_estimate": {**noise_map.to_dict(), "description": noise_map.describe(class_names)}}
