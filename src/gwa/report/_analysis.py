"""Per-run quantities the report, flag and compare commands share; reads a run directory only.

Everything here works on :class:`gwa.rundir.Run` (the run-directory contract) and numpy; no plotting,
no models. Epochs are the run directory's 1-based epoch numbers throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gwa import policy
from gwa.rundir import Run, RunDirError, load_run

ALIGNMENT = "alignment"


def open_run(run_or_path) -> Run:
    """Return ``run_or_path`` if it is a loaded :class:`Run`, else load the run directory at that path."""
    if isinstance(run_or_path, Run):
        return run_or_path
    if not isinstance(run_or_path, (str, Path)):
        raise TypeError(
            f"Expected `run` to be a gwa.rundir.Run or a path; got type {type(run_or_path).__name__}."
        )
    return load_run(run_or_path)


def require_epochs(run: Run) -> None:
    """Raise a clear error when a run has not finished a single epoch yet."""
    if not run.metrics:
        raise RunDirError(
            f"{run.path} has no finished epoch yet (metrics.jsonl is missing or empty); nothing to analyse."
        )


def has_scores(run: Run, signal: str = ALIGNMENT) -> bool:
    return signal in run.signals()


def alignment_matrix(run: Run) -> np.ndarray:
    """``(E, N)`` per-sample alignment of every logged epoch, NaN where a sample was not seen.

    Raises:
        RunDirError: when the run has no logged epoch or lacks the per-sample scores of one.
    """
    require_epochs(run)
    if not has_scores(run):
        raise RunDirError(
            f"{run.path} has no per-sample alignment scores (scores/{ALIGNMENT}_NNNN.npy); the "
            f"trainer must store them (it logged {len(run.metrics)} epoch(s) of metrics only)."
        )
    return np.asarray(run.score_matrix(ALIGNMENT), dtype=np.float64)


@dataclass(frozen=True)
class SampleStats:
    """Per-sample summaries of alignment over epochs (arrays of shape ``(N,)``, indexed by sample id).

    Attributes:
        mean: mean alignment over the epochs where the sample was seen (NaN if never seen).
        std: population standard deviation over those epochs (0 for a single epoch).
        last: alignment at the last epoch where the sample was seen.
        frac_negative: fraction of the seen epochs with alignment < 0.
        n_seen: number of epochs where the sample was seen.
    """

    mean: np.ndarray
    std: np.ndarray
    last: np.ndarray
    frac_negative: np.ndarray
    n_seen: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        return self.n_seen > 0


def sample_stats(matrix: np.ndarray) -> SampleStats:
    """Summaries over the epoch axis of an ``(E, N)`` score matrix with NaN for unseen samples."""
    matrix = np.asarray(matrix, dtype=np.float64)
    seen = np.isfinite(matrix)
    n_seen = seen.sum(axis=0)
    safe = np.maximum(n_seen, 1)
    filled = np.where(seen, matrix, 0.0)
    mean = filled.sum(axis=0) / safe
    var = np.where(seen, (matrix - mean) ** 2, 0.0).sum(axis=0) / safe
    negative = (np.where(seen, matrix, 0.0) < 0).sum(axis=0)
    # Index of the last seen epoch per sample (argmax over the reversed seen mask).
    last_idx = matrix.shape[0] - 1 - np.argmax(seen[::-1], axis=0) if matrix.shape[0] else np.zeros(0, int)
    last = (
        matrix[last_idx, np.arange(matrix.shape[1])] if matrix.shape[0] else np.full(matrix.shape[1], np.nan)
    )
    never = n_seen == 0
    nan = np.where(never, np.nan, 1.0)
    return SampleStats(
        mean=mean * nan,
        std=np.sqrt(var) * nan,
        last=np.where(never, np.nan, last),
        frac_negative=negative / safe * nan,
        n_seen=n_seen,
    )


def gwa_paper_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """The paper's verbatim per-epoch GWA (``gwa_paper``) and a boolean mask of the epochs whose value is guarded.

    An epoch counts as guarded when the trainer logged ``gwa_paper_flagged`` true or a ``gwa_guard`` code, or when
    its value is missing or not finite.
    """
    gwa_paper = run.series("gwa_paper")
    flagged = np.array(
        [bool(r.get("gwa_paper_flagged")) or r.get("gwa_guard") is not None for r in run.metrics], dtype=bool
    )
    return gwa_paper, flagged | ~np.isfinite(gwa_paper)


#: Readable names of the guard codes (:class:`gwa.GuardCode`), for grouping epochs in the report.
GUARD_LABELS = {
    "no_scores": "no scores",
    "constant_scores": "constant scores",
    "kurtosis_pole": "kurtosis pole",
}


def guard_reasons(run: Run) -> dict[int, tuple[str, str]]:
    """``{epoch: (code, message)}`` for every epoch whose paper GWA was guarded by the trainer."""
    out = {}
    for row in run.metrics:
        if row.get("gwa_paper_flagged") or row.get("gwa_guard") is not None:
            code = row.get("gwa_guard") or "flagged"
            out[int(row["epoch"])] = (code, row.get("gwa_guard_message") or "flagged by the trainer")
    return out


def mean_alignment_curve(run: Run) -> np.ndarray:
    """Per-epoch mean alignment: the logged ``align_mean``, else the mean of the stored per-sample scores."""
    mean = run.series("align_mean")
    if np.isnan(mean).any() and has_scores(run):
        matrix = alignment_matrix(run)
        seen = np.isfinite(matrix).sum(axis=1)
        from_scores = np.where(
            seen > 0, np.where(np.isfinite(matrix), matrix, 0.0).sum(axis=1) / np.maximum(seen, 1), np.nan
        )
        mean = np.where(np.isnan(mean), from_scores, mean)
    return mean


def metric_at(run: Run, key: str, epoch: int | None) -> float:
    """A metric of one epoch (NaN when the epoch or the value is missing)."""
    if epoch is None:
        return math.nan
    for row in run.metrics:
        if int(row["epoch"]) == int(epoch):
            value = row.get(key)
            return math.nan if value is None else float(value)
    return math.nan


@dataclass(frozen=True)
class Choice:
    """One stop criterion's chosen epoch and its test accuracy; ``source``: "summary" or "recomputed"."""

    criterion: str
    epoch: int
    test_acc: float
    source: str


def planned_epochs(run: Run) -> int | None:
    """The run's planned number of epochs (fixes the warm-up), or None when its config does not say."""
    planned = run.config.get("epochs") or run.config.get("max_epochs")
    return int(planned) if isinstance(planned, int) and planned >= len(run.metrics) else None


def recompute_choices(run: Run) -> dict[str, Choice]:
    """Stop criteria recomputed from metrics.jsonl (when summary.json is absent, e.g. an interrupted run), by the
    core policy (:func:`gwa.policy.select_all`) with the run's planned epochs and fine-tuning rule."""
    require_epochs(run)
    total = planned_epochs(run)
    candidates = policy.select_all(run.metrics, finetune=bool(run.config.get("finetune")), total_epochs=total)
    return {
        name: Choice(name, epoch, metric_at(run, "test_acc", epoch), "recomputed")
        for name, epoch in candidates.items()
    }


def chosen_epochs(run: Run) -> dict[str, Choice]:
    """Each criterion's chosen epoch: from summary.json when present, else :func:`recompute_choices`."""
    criteria = run.summary["criteria"] if run.summary is not None else {}
    out = {}
    for name, entry in criteria.items():
        epoch = entry.get("epoch")
        if epoch is None:  # a criterion that could not choose
            continue
        test_acc = entry.get("test_acc")
        test_acc = metric_at(run, "test_acc", epoch) if test_acc is None else float(test_acc)
        out[str(name)] = Choice(str(name), int(epoch), test_acc, "summary")
    return out or recompute_choices(run)


def diagnostics(run: Run) -> list[dict]:
    """Why not to trust the default criterion's choice, as ``{code, message, action, evidence, level}`` dicts:
    from summary.json when it has them, else :func:`gwa.policy.diagnose` over the metric rows (with the per-sample
    alignment and the per-class evidence when stored)."""
    summary = run.summary
    if summary is not None and summary["diagnostics"] is not None:
        return [d for d in summary["diagnostics"] if isinstance(d, dict) and "code" in d]
    require_epochs(run)
    # The criterion the writer's stop rule followed (and diagnosed); without a summary, the callbacks' config says.
    criterion = summary["monitor"] if summary is not None else run.config.get("monitor")
    criterion = criterion if criterion in policy.CRITERIA else policy.DEFAULT_CRITERION
    total = planned_epochs(run)
    choice = chosen_epochs(run).get(criterion)
    epoch = choice.epoch if choice is not None and choice.epoch in run.epochs else None
    alignment = None
    if has_scores(run):
        try:
            alignment = alignment_matrix(run)
        except RunDirError:  # scores stored for some epochs only
            alignment = None
    if alignment is not None and not np.isfinite(alignment).any():
        alignment = None
    found = policy.diagnose(
        run.metrics,
        criterion,
        epoch=epoch,
        alignment=alignment,
        total_epochs=total,
        finetune=bool(run.config.get("finetune")),
        evidence=run.class_evidence(),  # classes.jsonl: the noise map and class_conditional (None: without)
    )
    return [
        {"code": d.code, "message": d.message, "action": d.action, "evidence": d.evidence, "level": d.level}
        for d in found
    ]


def run_notes(run: Run) -> list[str]:
    """Plain-sentence caveats about a run: interrupted, no summary, missing optional files."""
    notes = [
        f"Unreadable: {p}" for p in run.problems
    ]  # corrupt metrics lines, a summary naming unlogged epochs
    if not run.complete:
        notes.append(
            f"This run is not complete (status {run.config.get('status')!r}); it shows the "
            f"{len(run.metrics)} epoch(s) logged so far."
        )
    if run.summary is None and run.metrics:
        notes.append("No summary.json: each criterion's epoch was recomputed from metrics.jsonl.")
    return notes


def last_seen_signal(run: Run, signal: str) -> np.ndarray | None:
    """``(N,)`` a per-sample signal (e.g. ``pred``) at the last logged epoch where each sample was seen; None when
    the run did not store that signal."""
    if not has_scores(run, signal) or not run.metrics:
        return None
    try:
        matrix = np.asarray(run.score_matrix(signal), dtype=np.float64)
    except RunDirError:  # stored for some epochs only (e.g. a resumed run with other signals)
        return None
    seen = np.isfinite(matrix)
    last = matrix.shape[0] - 1 - np.argmax(seen[::-1], axis=0)
    values = matrix[last, np.arange(matrix.shape[1])]
    return np.where(seen.any(axis=0), values, np.nan)
