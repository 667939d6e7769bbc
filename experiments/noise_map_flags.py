"""Issue 18, item 6 (development): does per-class evidence make better flags under class-pair noise?

Re-reads the 45 development runs of ``experiments/noise_map_train.py`` and compares, against the true flipped labels,
the current ``window`` flag rule (mean alignment over gwa's window < 0; ranked by that mean) with per-class
variants that read the run's noise map (:func:`gwa.policy.noise_map_of_run`) and each class's alignment scale:

- ``class_scaled``: the window mean divided by its given class's scale (the mean positive window mean of the
  class), so a class the model aligns weakly is not over-flagged; flags: scaled mean < 0 (as ``window``) — only
  the ranking (AUROC) can differ;
- ``class_quota``: per given class ``c``, the ``round(per_class[c] * n_c)`` lowest scaled means are flagged (the
  map's per-class rate as the quota); ranked as ``class_scaled``;
- ``pair_aware``: the core's rule (``gwa.policy.flag_scores(rule="pair_aware")``, now in ``FLAG_RULES``): flags
  ``window``'s samples plus, in a cell the map names as a swapped pair (given ``c``, majority prediction ``k`` over
  the window), those with mean below ``+PAIR_SLACK * scale[c]``; ranked by the mean minus that slack (the
  ``window`` ranking elsewhere).

A map that abstains for another reason than ambiguity (``policy.is_ambiguous``) leaves every variant equal to ``window``. All of it is in-sample
(``gwa.policy.PAIR_SLACK`` set on these runs). Writes ``flags_runs.csv`` and ``flags.md``:

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python experiments/noise_map_flags.py runs/noise_map docs/data/noise-map
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_map import C, load, rows_of, setting, write_csv

from gwa import policy

RULES = ("window", "class_scaled", "class_quota", "pair_aware")


def f1(flagged: np.ndarray, noisy: np.ndarray) -> float:
    tp = float((flagged & noisy).sum())
    return 2 * tp / max(float(flagged.sum() + noisy.sum()), 1.0)


def rules_of(run: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per rule: (flagged, suspicion key: larger = more suspicious)."""
    rows = rows_of(run)
    total = len(rows)
    a, y = run["alignment"].astype(np.float64), run["labels"]
    score, flagged, _ = policy.flag_scores(a, history=rows, total_epochs=total)
    out = {"window": (flagged.astype(bool), -score)}
    nm = policy.noise_map_of_run(rows, total_epochs=total)
    scale = np.array(
        [np.mean(score[(y == c) & (score > 0)]) if np.any((y == c) & (score > 0)) else 1.0 for c in range(C)]
    )
    scaled = score / scale[y]
    if nm is None or not (nm.reliable or policy.is_ambiguous(nm)):  # pairs read on ambiguous maps too
        return dict.fromkeys(RULES, out["window"])
    out["class_scaled"] = (scaled < 0, -scaled)
    quota = np.zeros(y.size, dtype=bool)
    for c in range(C):
        members = np.flatnonzero(y == c)
        k = round(float(nm.per_class[c]) * members.size)
        quota[members[np.argsort(scaled[members])[:k]]] = True
    out["class_quota"] = (quota, -scaled)
    pair_score, pair_flagged, _ = policy.flag_scores(
        a,
        rule="pair_aware",
        history=rows,
        total_epochs=total,
        labels=y,
        predictions=run["pred"],
        noise_map=nm,
    )
    out["pair_aware"] = (pair_flagged.astype(bool), -pair_score)
    return out


def cleanlab_rules(run: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cleanlab's flags and ranking from the run's 5-fold out-of-sample probabilities, where they were trained."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    out = {}
    for recipe in ("last", "early"):
        probs = run.get(f"cl_probs_{recipe}")
        if probs is not None:
            flagged = find_label_issues(run["labels"], probs)
            out[f"cleanlab_{recipe}"] = (flagged, -get_label_quality_scores(run["labels"], probs))
    return out


def analyse(run: dict) -> list[dict]:
    noisy = run["labels"] != run["clean_labels"]
    out = []
    for rule, (flagged, key) in {**rules_of(run), **cleanlab_rules(run)}.items():
        out.append(
            {
                "run": run["name"],
                "family": f"{run['dataset']} {run['model']}",
                "noise": run["noise"],
                "rate": run["rate"],
                "seed": run["seed"],
                "rule": rule,
                "f1": round(f1(flagged, noisy), 4) if noisy.any() else "",
                "auroc": round(float(roc_auc_score(noisy, key)), 4) if noisy.any() else "",
                "flagged": int(flagged.sum()),
            }
        )
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| family | setting | " + " | ".join(f"{r} F1 / AUROC" for r in RULES) + " |",
        "|---|---|" + "---|" * len(RULES),
    ]
    noisy = [r for r in results if r["noise"] != "none"]
    for fam, s in sorted({(r["family"], setting(r)) for r in noisy}):
        cells: list[str] = []
        for rule in RULES:
            g = [r for r in noisy if (r["family"], setting(r), r["rule"]) == (fam, s, rule)]
            cells.append(f"{np.mean([r['f1'] for r in g]):.3f} / {np.mean([r['auroc'] for r in g]):.3f}")
        lines.append(f"| {fam} | {s} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Runs where `pair_aware` beats / ties / loses to `window` (F1; AUROC), per noise family:")
    lines.append("")
    for noise in ("pair", "symmetric"):
        pairs = [
            (w, p)
            for w in noisy
            for p in noisy
            if w["noise"] == noise
            and w["rule"] == "window"
            and p["rule"] == "pair_aware"
            and p["run"] == w["run"]
        ]
        counts = [
            f"{sum(p[m] > w[m] for w, p in pairs)} / {sum(p[m] == w[m] for w, p in pairs)} / {sum(p[m] < w[m] for w, p in pairs)}"
            for m in ("f1", "auroc")
        ]
        lines.append(f"- {noise}: F1 {counts[0]}; AUROC {counts[1]} (of {len(pairs)} runs)")
    lines.append("")
    with_folds = {(r["family"], r["seed"]) for r in noisy if r["rule"].startswith("cleanlab_")}
    seeds = ", ".join(str(s) for s in sorted({seed for _, seed in with_folds})) or "none"
    lines.append(
        f"The runs with cleanlab's 5-fold probabilities (seed {seeds} of the two MLP families), F1 / AUROC, "
        "mean over those seeds:"
    )
    lines.append("")
    shown = ("window", "pair_aware", "cleanlab_last", "cleanlab_early")
    lines.append("| family | setting | " + " | ".join(shown) + " |")
    lines.append("|---|---|" + "---|" * len(shown))
    folded = [r for r in noisy if (r["family"], r["seed"]) in with_folds]
    for fam, s in sorted({(r["family"], setting(r)) for r in folded}):
        here = [r for r in folded if (r["family"], setting(r)) == (fam, s)]
        cells = []
        for k in shown:
            got = [r for r in here if r["rule"] == k]
            mean_f1, mean_auroc = (np.mean([r[m] for r in got]) for m in ("f1", "auroc")) if got else (0, 0)
            cells.append(f"{mean_f1:.3f} / {mean_auroc:.3f}" if got else "n/a")
        lines.append(f"| {fam} | {s} | " + " | ".join(cells) + " |")
    clean = [r for r in results if r["noise"] == "none"]
    lines.append("")
    lines.append(
        "- clean runs, samples flagged (mean over runs): "
        + ", ".join(
            f"{rule} {np.mean([r['flagged'] for r in clean if r['rule'] == rule]):.0f}" for rule in RULES
        )
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    results = [r for path in sorted(args.runs.glob("*.npz")) for r in analyse(load(path))]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "flags_runs.csv", results)
    (args.out / "flags.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
