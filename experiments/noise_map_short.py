"""Issue 18: does the noise map abstain where a run is too short to tell noise from hard samples?

Re-reads the 45 development runs of ``experiments/noise_map_train.py`` cut to their first K epochs (Adam at a
constant learning rate, so a cut run is exactly the run a user who asked for K epochs would have), and reports per
family, setting and K: the map's reading, whether it abstains, and whether ``class_conditional`` fires with the
abstention (``after``) and without it (``before``: the map's own pairs and concentration, as before issue 18's
abstention). Writes ``short_runs.csv`` and ``short_runs.md``:

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python experiments/noise_map_short.py runs/noise_map docs/data/noise-map
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_map import load, rows_of, setting, write_csv

from gwa import policy

CUTS = (3, 5, 8, 12, None)  # None: the full run


def analyse(run: dict) -> list[dict]:
    rows = rows_of(run)
    true_rate = float((run["labels"] != run["clean_labels"]).mean())
    out = []
    for cut in CUTS:
        kept = rows if cut is None else rows[:cut]
        nm = policy.noise_map_of_run(kept, total_epochs=len(kept))
        assert nm is not None
        after = [d.code for d in policy.diagnose(kept, "gwa", total_epochs=len(kept))]
        out.append(
            {
                "run": run["name"],
                "family": f"{run['dataset']} {run['model']}",
                "noise": run["noise"],
                "rate": run["rate"],
                "seed": run["seed"],
                "epochs": len(kept),
                "true_rate": round(true_rate, 4),
                "map_rate": round(nm.rate, 4),
                "reliable": int(nm.reliable),
                "reason": nm.reason,
                "class_conditional_before": int(policy.is_class_conditional(replace(nm, reliable=True))),
                "class_conditional_after": int("class_conditional" in after),
            }
        )
    return out


def table(results: list[dict]) -> str:
    lines = [
        (
            "| family | setting | epochs | runs | true rate | map reads (mean) | abstains | class_conditional "
            "before | after |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["family"], setting(r), r["epochs"]) for r in results})
    for fam, s, e in keys:
        g = [r for r in results if (r["family"], setting(r), r["epochs"]) == (fam, s, e)]
        lines.append(
            f"| {fam} | {s} | {e} | {len(g)} | {100 * np.mean([r['true_rate'] for r in g]):.1f} | "
            f"{100 * np.mean([r['map_rate'] for r in g]):.1f} | {sum(1 - r['reliable'] for r in g)}/{len(g)} | "
            f"{sum(r['class_conditional_before'] for r in g)}/{len(g)} | "
            f"{sum(r['class_conditional_after'] for r in g)}/{len(g)} |"
        )
    return "\n".join(lines) + "\n"


def summary(results: list[dict]) -> str:
    """Per family and cut: abstentions, the clean runs' reading and class_conditional by noise family."""
    lines = [
        (
            "| family | epochs | runs | abstains | clean runs' map reads | class_conditional before (clean / "
            "symmetric / pair) | after (clean / symmetric / pair) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for fam in sorted({r["family"] for r in results}):
        g = [r for r in results if r["family"] == fam]
        for e in sorted({r["epochs"] for r in g}):
            v = [r for r in g if r["epochs"] == e]

            def fired(key: str, v=v) -> str:
                return " / ".join(
                    f"{sum(r[key] for r in v if r['noise'] == n)}/{sum(r['noise'] == n for r in v)}"
                    for n in ("none", "symmetric", "pair")
                )

            clean = [r["map_rate"] for r in v if r["noise"] == "none"]
            lines.append(
                f"| {fam} | {e} | {len(v)} | {sum(1 - r['reliable'] for r in v)}/{len(v)} | "
                f"{100 * np.mean(clean):.1f} | {fired('class_conditional_before')} | "
                f"{fired('class_conditional_after')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    results = [r for path in sorted(args.runs.glob("*.npz")) for r in analyse(load(path))]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "short_runs.csv", results)
    text = summary(results) + "\n" + table(results)
    (args.out / "short_runs.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
