"""The end of a run, for every surface: each criterion's choice, the noise map, the diagnostics, the RunSummary.

:meth:`gwa.integrations.EpochMonitor.finish` calls :func:`conclude` once training ends, for ``gwa train`` (torch
and jax), ``RunRecorder`` and the Lightning and Hugging Face callbacks alike; what only one surface knows (the
label noise ``gwa train`` added, its best checkpoint, the Hugging Face best-model folder) comes in as
``extra`` fields of the same :class:`gwa.rundir.RunSummary`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from gwa import policy
from gwa.integrations._classes import EVIDENCE_KEY, ClassLog, noise_estimate
from gwa.rundir import RunDirError, RunSummary, load_run, run_summary

#: The accuracies a criterion's entry in summary.json carries, when its epoch's row logged them.
CHOICE_ACCURACIES = ("test_acc", "val_acc", "val_acc_clean", "veto_acc")
_EVAL_ACC = re.compile(r"eval_.+_acc")


def criterion_choices(
    rows: list[dict], classes: ClassLog, *, finetune: bool, total_epochs: int | None, veto: bool
) -> dict[str, int]:
    """``{criterion: epoch}`` of every criterion that can choose (:func:`gwa.policy.select_all`), and with the
    veto its choice among gwa's candidates (``"veto"``, :func:`gwa.policy.choose_with_veto`, as the stopper's)."""
    if not rows:
        return {}
    choices = policy.select_all(rows, finetune=finetune, total_epochs=total_epochs)
    if veto:
        evidence = classes.evidence
        veto_rows = (
            [{**r, EVIDENCE_KEY: e} for r, e in zip(rows, evidence, strict=True)]
            if evidence is not None and len(evidence) == len(rows)
            else rows
        )
        choices["veto"], _ = policy.choose_with_veto(veto_rows, total_epochs=total_epochs, finetune=finetune)
    return choices


def choice_entry(rows: list[dict], epoch: int) -> dict[str, Any]:
    """summary.json's entry of a criterion: its epoch and the accuracies logged at that epoch."""
    row = next((r for r in rows if int(r["epoch"]) == int(epoch)), {})
    keys = [k for k in row if k in CHOICE_ACCURACIES or _EVAL_ACC.fullmatch(k)]
    return {"epoch": int(epoch), **{k: row[k] for k in keys}}


def alignment_history(writer, last_scores) -> np.ndarray | None:
    """The per-sample alignment the diagnostics read: the run directory's ``(E, N)`` matrix when it stores every
    epoch's scores (as the report reads it), else the last epoch's ``(1, N)``; None when nothing finite."""
    matrix = None
    path = getattr(writer, "path", None)
    if path is not None and hasattr(writer, "write_summary"):  # a RunWriter, not another rank's stand-in
        try:
            matrix = np.asarray(load_run(path).score_matrix("alignment"), np.float64)
        except RunDirError:  # no per-sample scores stored (batches without ids), or not for every epoch
            matrix = None
    if matrix is None and last_scores is not None:
        matrix = np.asarray(last_scores, np.float64)[None]
    return matrix if matrix is not None and matrix.size and np.isfinite(matrix).any() else None


@dataclasses.dataclass(frozen=True)
class Conclusion:
    """What a run concludes: the summary (every field of :class:`RunSummary`), its noise map and diagnostics."""

    summary: RunSummary
    noise_map: policy.NoiseMap | None
    diagnostics: list[policy.Diagnostic]


def conclude(
    rows: list[dict],
    classes: ClassLog,
    stopper: policy.EarlyStopper,
    *,
    monitor: str,
    finetune: bool,
    veto: bool,
    alignment: np.ndarray | None,
    num_samples: int | None,
    class_names=None,
    extra: Mapping[str, Any] | None = None,
) -> Conclusion:
    """The run's :class:`Conclusion` from its metric rows, per-class evidence and stopper."""
    total = stopper.total_epochs
    noise_map = classes.noise_map(rows, total) if rows else None
    diagnostics = (
        policy.diagnose(
            rows,
            monitor,
            alignment=alignment,
            total_epochs=total,
            finetune=finetune,
            evidence=classes.evidence if noise_map is not None else None,
            noise_map=noise_map,
        )
        if rows
        else []
    )
    choices = criterion_choices(rows, classes, finetune=finetune, total_epochs=total, veto=veto)
    summary = run_summary(
        {
            "default": policy.DEFAULT_CRITERION,
            "monitor": monitor,
            "criteria": {name: choice_entry(rows, e) for name, e in choices.items()},
            "best_epoch": stopper.best_epoch,
            "stopped_epoch": stopper.stopped_epoch,
            "decision": stopper.message or None,
            "epochs_run": len(rows),
            "epochs_planned": total,
            "final_test_acc": rows[-1].get("test_acc") if rows else None,
            "diagnostics": [dataclasses.asdict(d) for d in diagnostics],
            "noise_estimate": noise_estimate(noise_map, class_names).get("noise_estimate"),
            "num_samples": num_samples,
            **(extra or {}),
        }
    )
    return Conclusion(summary, noise_map, diagnostics)
