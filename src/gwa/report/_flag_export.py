"""What ``gwa flag`` writes beside its ranking: a per-class summary and a cleanlab-compatible export.

* ``flagged_classes.csv``: one row per given label: samples seen, flagged, the flagged share, and the predicted
  class most of its flagged samples went to (the pair that looks swapped) with its share of the flags.
* ``label_issues.npy`` / ``label_quality.npy`` / ``label_issues.csv``: indexed by the **source dataset** (the
  run's ``source_index.npy``; by sample id when the run has none), like ``cleanlab.filter.find_label_issues``
  (a boolean mask) and ``cleanlab.rank.get_label_quality_scores`` (scores in [0, 1], lower = more likely a
  label issue). Rows of the source dataset the run did not train on (held out, outside the subset, never seen)
  are ``False`` in the mask and NaN in the quality scores.

The quality score is a monotone map of the flag rule's score, so it ranks exactly as ``flagged.csv`` does
(ties aside): ``(1 + mean alignment) / 2`` for the rules scored by a mean alignment (``window``, ``lastk``,
``mean``), ``1 - fraction of negative epochs`` for ``frac``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from gwa.rundir import Run, load_array, save_npy_atomic, write_atomic


def class_names(run: Run) -> list[str] | None:
    """The run's class names (``config.json``'s ``class_names``, written by ``gwa train``), or None."""
    names = run.config.get("class_names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return None


def source_index(run: Run) -> np.ndarray | None:
    """``(N,)`` each sample id's row in the source dataset (``source_index.npy``), or None."""
    f = run.path / "source_index.npy"
    return load_array(f, run.num_samples).astype(np.int64) if f.exists() else None


def label_quality(rule: str, scores: np.ndarray) -> np.ndarray:
    """The rule's scores as cleanlab-style label quality in [0, 1] (lower = more likely a label issue)."""
    scores = np.asarray(scores, dtype=np.float64)
    quality = 1.0 - scores if rule == "frac" else (1.0 + scores) / 2.0
    return np.clip(quality, 0.0, 1.0)


def _name(names: list[str] | None, k) -> str:
    if names is None or k is None or not np.isfinite(k) or not 0 <= int(k) < len(names):
        return ""
    return names[int(k)]


def per_class_rows(result, names: list[str] | None = None) -> list[dict]:
    """One row per given label of the seen samples: seen, flagged, share, and the flags' most common prediction.

    ``likely_true`` is the predicted class most flagged samples of that label went to (empty without stored
    predictions or flags); ``pair_share`` the fraction of the label's flags that went there; ``precision`` the
    flagged share that is in the noise mask (when known).
    """
    if result.labels is None:
        return []
    labels = np.asarray(result.labels, dtype=np.int64)
    rows = []
    for k in np.unique(labels[labels >= 0]):
        mine = labels == k
        flagged = mine & result.flagged
        row: dict = {
            "label": int(k),
            "name": _name(names, k),
            "seen": int(mine.sum()),
            "flagged": int(flagged.sum()),
            "flagged_share": float(flagged.sum() / mine.sum()),
            "likely_true": "",
            "likely_true_name": "",
            "pair_share": "",
        }
        if result.predictions is not None and flagged.any():
            pred = np.asarray(result.predictions, dtype=np.float64)[flagged]
            pred = pred[np.isfinite(pred) & (pred != k)].astype(np.int64)
            if pred.size:
                values, counts = np.unique(pred, return_counts=True)
                top = int(values[np.argmax(counts)])
                row.update(
                    likely_true=top,
                    likely_true_name=_name(names, top),
                    pair_share=float(counts.max() / flagged.sum()),
                )
        if result.is_noisy is not None:
            row["precision"] = (
                float((flagged & result.is_noisy).sum() / flagged.sum()) if flagged.any() else ""
            )
        rows.append(row)
    return rows


def describe_classes(rows: list[dict], limit: int = 10) -> list[str]:
    """Terminal lines for the labels with the most flags (at most ``limit``)."""
    ranked = sorted((r for r in rows if r["flagged"]), key=lambda r: (-r["flagged_share"], r["label"]))
    lines = []
    for r in ranked[:limit]:
        label = f"{r['label']}" + (f" ({r['name']})" if r["name"] else "")
        text = f"  class {label}: {r['flagged']} of {r['seen']} flagged ({100 * r['flagged_share']:.1f}%)"
        if r["likely_true"] != "":
            true = f"{r['likely_true']}" + (f" ({r['likely_true_name']})" if r["likely_true_name"] else "")
            text += f", {100 * r['pair_share']:.0f}% of them predicted as {true}"
        lines.append(text)
    return lines


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.StringIO(newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
        text = fh.getvalue()
    write_atomic(path, lambda out: out.write(text.encode()))
    return path


def write_class_summary(rows: list[dict], path) -> Path:
    header = [
        "label",
        "name",
        "seen",
        "flagged",
        "flagged_share",
        "likely_true",
        "likely_true_name",
        "pair_share",
    ]
    if rows and "precision" in rows[0]:
        header.append("precision")
    return _write_csv(Path(path), header, [[r.get(h, "") for h in header] for r in rows])


def write_cleanlab_export(result, run: Run, folder, names: list[str] | None = None) -> dict[str, Path]:
    """``label_issues.npy`` (bool), ``label_quality.npy`` (float64, NaN where not judged) and
    ``label_issues.csv``, indexed by the source dataset; returns their paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = source_index(run)
    ids = np.asarray(result.sample_ids, dtype=np.int64)
    rows_in_source = ids if index is None else index[ids]
    size = int(run.config.get("source_size") or 0)
    size = max(size, int(index.max()) + 1 if index is not None and index.size else 0, run.num_samples or 0)
    quality = label_quality(result.rule, result.scores)
    issues = np.zeros(size, dtype=bool)
    issues[rows_in_source] = result.flagged
    scores = np.full(size, np.nan)
    scores[rows_in_source] = quality
    out = {"label_issues": folder / "label_issues.npy", "label_quality": folder / "label_quality.npy"}
    save_npy_atomic(out["label_issues"], issues)
    save_npy_atomic(out["label_quality"], scores)
    order = np.argsort(rows_in_source, kind="stable")
    header = ["source_index", "sample_id", "label", "label_name", "is_label_issue", "label_quality"]
    if result.predictions is not None:
        header += ["prediction", "prediction_name"]
    table = []
    for i in order:
        label = None if result.labels is None else int(result.labels[i])
        row = [
            int(rows_in_source[i]),
            int(ids[i]),
            "" if label is None else label,
            _name(names, label),
            int(result.flagged[i]),
            f"{quality[i]:.6g}",
        ]
        if result.predictions is not None:
            pred = result.predictions[i]
            row += ["" if not np.isfinite(pred) else int(pred), _name(names, pred)]
        table.append(row)
    out["label_issues_csv"] = _write_csv(folder / "label_issues.csv", header, table)
    return out
