"""What ``gwa flag RUN`` computes: training samples ranked as likely mislabeled, exported as CSV.

The rules (``window``; ``pair_aware``; ``lastk``; ``mean``; ``frac``) are the core policy's (:mod:`gwa.policy`, flag
rules); each sample is judged on the logged epochs in which it was seen, and samples never seen are left out.
Without ``--rule`` the core chooses (:func:`gwa.policy.choose_flag_rule`): ``pair_aware`` where the run's noise map
(``summary.json``'s ``noise_estimate``, else recomputed from ``classes.jsonl``) is reliable and shows swapped class
pairs (the ``class_conditional`` situation) and the run stored its predictions, else ``window``; the command
prints which rule it used and why.

``--top K`` flags the first K samples of the ranking instead of applying the threshold. The CSV has the columns
``rank, sample_id, label, score, flagged, rule`` (then ``is_noisy`` when the run's noise mask is known,
``prediction`` when the run stored the ``pred`` signal, ``source_index`` when the run has ``source_index.npy``,
and ``label_name`` / ``prediction_name`` when its config names the classes), one row per seen sample, in rank
order. When the mask is known, the command prints precision and recall of the flagged set and the AUROC / AUPRC
of the ranking score (scikit-learn), against the mask.

Beside the ranking the command writes a per-class summary (``flagged_classes.csv``) and a cleanlab-compatible
export indexed by the source dataset (``label_issues.npy``, ``label_quality.npy``, ``label_issues.csv``); see
:mod:`gwa.report._flag_export`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gwa.policy import (
    DEFAULT_FLAG_RULE,
    DEFAULT_LAST_K,
    PAIR_SLACK,
    check_flag_options,
    choose_flag_rule,
    flag_scores,
    flag_window,
)
from gwa.rundir import write_atomic


@dataclass(frozen=True)
class FlagResult:
    """Seen samples in rank order (arrays of shape ``(M,)``), which of them are flagged, and quality numbers.

    ``precision``, ``recall``, ``auroc`` and ``auprc`` are measured against the run's noise mask; they are
    ``None`` when the mask is unknown or the number is undefined (nothing flagged, or one class only).
    """

    rule: str
    description: str
    sample_ids: np.ndarray
    scores: np.ndarray
    flagged: np.ndarray
    labels: np.ndarray | None
    is_noisy: np.ndarray | None
    n_unseen: int
    precision: float | None
    recall: float | None
    auroc: float | None
    auprc: float | None
    predictions: np.ndarray | None = (
        None  # the model's prediction at each sample's last seen epoch, when stored
    )
    source_index: np.ndarray | None = None  # each sample's row in the source dataset, when the run has it
    class_names: list[str] | None = None  # the run's class names, when its config has them
    rule_reason: str = ""  # why this rule: forced by the caller, or what the noise map showed

    @property
    def flagged_ids(self) -> np.ndarray:
        """Sample ids of the flagged samples, in rank order."""
        return self.sample_ids[self.flagged]

    def to_csv(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.StringIO(newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["rank", "sample_id", "label", "score", "flagged", "rule"]
                + (["is_noisy"] if self.is_noisy is not None else [])
                + (["prediction"] if self.predictions is not None else [])
                + (["source_index"] if self.source_index is not None else [])
                + (["label_name"] if self.class_names is not None and self.labels is not None else [])
                + (
                    ["prediction_name"]
                    if self.class_names is not None and self.predictions is not None
                    else []
                )
            )
            for rank, i in enumerate(range(self.sample_ids.size), 1):
                row = [
                    rank,
                    int(self.sample_ids[i]),
                    "" if self.labels is None else int(self.labels[i]),
                    f"{self.scores[i]:.6g}",
                    int(self.flagged[i]),
                    self.rule,
                ]
                if self.is_noisy is not None:
                    row.append(int(self.is_noisy[i]))
                if self.predictions is not None:
                    pred = self.predictions[i]
                    row.append(int(pred) if np.isfinite(pred) else "")
                if self.source_index is not None:
                    row.append(int(self.source_index[i]))
                if self.class_names is not None and self.labels is not None:
                    row.append(_class_name(self.class_names, self.labels[i]))
                if self.class_names is not None and self.predictions is not None:
                    row.append(_class_name(self.class_names, self.predictions[i]))
                writer.writerow(row)
            text = fh.getvalue()
        write_atomic(path, lambda out: out.write(text.encode()))  # an earlier ranking survives a crash
        return path

    def summary(self) -> str:
        """A few lines for the terminal: what was flagged and, when the mask is known, how well."""
        n = self.sample_ids.size
        lines = [f"flag rule: {self.rule} ({self.rule_reason})"] if self.rule_reason else []
        lines += [
            f"rule {self.description}: flagged {int(self.flagged.sum())} of {n} samples"
            + (f" ({self.n_unseen} never seen, left out)" if self.n_unseen else "")
        ]
        if self.is_noisy is None:
            lines.append(
                "no noise mask in the run (which labels are wrong is not known): precision and recall "
                "cannot be measured"
            )
            return "\n".join(lines)

        if not self.is_noisy.any():
            lines.append(
                "the noise mask marks no flipped label (a clean run): precision and recall are not "
                "defined; the flagged samples are atypical or hard, not known label errors"
            )
            return "\n".join(lines)

        def show(value):
            return "n/a" if value is None else f"{value:.3f}"

        lines.append(
            f"against the noise mask ({int(self.is_noisy.sum())} flipped labels): precision "
            f"{show(self.precision)}, recall {show(self.recall)}; ranking score AUROC {show(self.auroc)}, "
            f"AUPRC {show(self.auprc)} (chance {self.is_noisy.mean():.3f})"
        )
        return "\n".join(lines)


def flag_samples(
    run,
    *,
    rule: str | None = None,
    last_k: int = DEFAULT_LAST_K,
    threshold: float | None = None,
    top: int | None = None,
) -> FlagResult:
    """Rank a run's training samples as likely mislabeled and flag the most suspicious ones.

    Args:
        run: a run directory path or a loaded :class:`gwa.rundir.Run`.
        rule: ``"window"``, ``"pair_aware"``, ``"lastk"``, ``"mean"`` or ``"frac"`` (see :mod:`gwa.policy`'s flag
            rules); None (default): ``pair_aware`` where the run's noise map reports swapped class pairs and the
            run stored its predictions, else ``window`` (:func:`gwa.policy.choose_flag_rule`).
        last_k: epochs the ``lastk`` rule looks at.
        threshold: the rule's threshold (default 0 for ``window``/``lastk``/``mean``, 0.5 for ``frac``).
        top: flag the first ``top`` samples of the ranking instead of applying the threshold.

    Returns:
        A :class:`FlagResult`; ``result.flagged_ids`` are the flagged sample ids, most suspicious first.

    Raises:
        gwa.rundir.RunDirError: not a run directory, no finished epoch, or missing per-sample scores.
        ValueError: for a bad option.

    Example:
        >>> res = flag_samples("runs/digits-noise0.2")  # doctest: +SKIP
        >>> res.flagged_ids[:5], res.precision, res.recall  # doctest: +SKIP
    """
    from gwa.report import _analysis as A
    from gwa.report._flag_export import class_names, source_index

    run = A.open_run(run)
    matrix = A.alignment_matrix(run)
    rule, reason, noise_map, predictions = _rule_and_inputs(run, rule)
    threshold = check_flag_options(rule, last_k, threshold, top)
    score, decision, key = flag_scores(
        matrix,
        rule=rule,
        last_k=int(last_k),
        threshold=threshold,
        history=run.metrics,
        total_epochs=A.planned_epochs(run),
        labels=run.labels,
        predictions=predictions,
        noise_map=noise_map,
    )
    window = (
        flag_window(run.metrics, matrix, total_epochs=A.planned_epochs(run))
        if rule in ("window", "pair_aware")
        else (1, 1)
    )
    ids = np.flatnonzero(np.isfinite(key))
    # Sort by the suspicion key; frac ties go to the lower mean alignment; remaining ties by sample id.
    tiebreak = A.sample_stats(matrix).mean[ids] if rule == "frac" else np.zeros(ids.size)
    ids = ids[np.lexsort((ids, tiebreak, key[ids]))]
    flagged = decision[ids] if top is None else np.arange(ids.size) < top
    mask = None if run.noise_mask is None else run.noise_mask.astype(bool)[ids]
    desc = {
        "window": (
            f"window (mean alignment < {threshold:g} over epochs {window[0]}-{window[1]}: after the "
            "warm-up through the epoch gwa's default rule chooses past the early transient)"
        ),
        "lastk": f"lastk (alignment < {threshold:g} in each of the last {last_k} epochs seen)",
        "mean": f"mean (mean alignment over epochs < {threshold:g})",
        "frac": f"frac (fraction of epochs with alignment < 0 >= {threshold:g})",
        "pair_aware": (
            f"pair_aware (mean alignment over epochs {window[0]}-{window[1]}, minus {PAIR_SLACK:g} x the "
            f"class's alignment scale in the noise map's swapped-pair cells, < {threshold:g})"
            + ("" if noise_map is not None else "; no usable noise map: the same as window")
        ),
    }[rule]
    if top is not None:
        desc = f"{rule} ranking, top {top}"
    quality = _quality(mask, flagged, -key[ids]) if mask is not None else (None,) * 4
    pred = A.last_seen_signal(run, "pred")
    labels = None if run.labels is None else run.labels[ids]
    source = source_index(run)
    return FlagResult(
        rule,
        desc,
        ids,
        score[ids],
        flagged,
        labels,
        mask,
        int(matrix.shape[1] - ids.size),
        *quality,
        predictions=None if pred is None else pred[ids],
        source_index=None if source is None else source[ids],
        class_names=class_names(run),
        rule_reason=reason,
    )


def _rule_and_inputs(run, rule: str | None):
    """The rule to use and why, with what ``pair_aware`` reads (the noise map, ``(E, N)`` predictions); the map
    is None where that rule is not used or cannot read it (then ``pair_aware`` equals ``window``)."""
    from gwa.report import _analysis as A
    from gwa.report._classes import noise_map_of

    if rule is not None and rule != "pair_aware":
        check_flag_options(rule, DEFAULT_LAST_K, None, None)  # an unknown name fails here, naming `rule`
        return rule, "chosen by the caller", None, None
    noise_map = noise_map_of(run)
    predictions = (
        np.asarray(run.score_matrix("pred"), dtype=np.float64) if A.has_scores(run, "pred") else None
    )
    if rule is None:
        rule, reason = choose_flag_rule(noise_map)
        if rule == "pair_aware" and (predictions is None or run.labels is None):
            rule = DEFAULT_FLAG_RULE
            reason += ", but the run stored no per-sample predictions or labels, which pair_aware reads"
    else:
        reason = "chosen by the caller"
    if noise_map is None or predictions is None or run.labels is None:
        return rule, reason, None, None
    return rule, reason, noise_map, predictions


def _class_name(names: list[str], k) -> str:
    return names[int(k)] if np.isfinite(k) and 0 <= int(k) < len(names) else ""


def _quality(
    mask: np.ndarray, flagged: np.ndarray, suspicion: np.ndarray
) -> tuple[float | None, float | None, float | None, float | None]:
    """Precision, recall of the flagged set and AUROC, AUPRC of the suspicion score against the mask."""
    try:
        from sklearn.metrics import average_precision_score, roc_auc_score
    except ModuleNotFoundError as exc:  # pragma: no cover - scikit-learn is installed with gwa-alignment[cli]
        raise ModuleNotFoundError(
            "`gwa flag` measures AUROC/AUPRC with scikit-learn: pip install 'gwa-alignment[cli]'",
            name="sklearn",
        ) from exc
    tp = int((flagged & mask).sum())
    # Without a single known flipped label, precision is not 0 but undefined: nothing could be found.
    precision = tp / int(flagged.sum()) if flagged.any() and mask.any() else None
    recall = tp / int(mask.sum()) if mask.any() else None
    both = mask.any() and not mask.all()
    auroc = float(roc_auc_score(mask, suspicion)) if both else None
    auprc = float(average_precision_score(mask, suspicion)) if both else None
    return precision, recall, auroc, auprc
