"""Pooled Δ to the 10% split per noise family, from the committed per-run file of a noise-map grid.

Reads ``criteria_runs.csv`` (written by ``experiments/noise_map.py``) and prints, per noise family and for all runs,
each criterion's test accuracy minus the 10% split's choice, in points: the mean over seeds with a Student t 95%
interval over the per-seed means of the group's settings (a seed fixes subset, noise and initialisation in every
setting: the design is crossed). Needs no raw run, so every number recomputes from the repository:

    python experiments/noise_map_pooled.py docs/data/noise-map-replication
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

SHOWN = ("gwa", "gwa_paper", "gwa_memorisation", "veto", "val2", "last")


def crossed_t(per_seed: list[float]) -> str:
    m = float(np.mean(per_seed))
    if len(per_seed) < 2:
        return f"{m:+.2f} (1 seed)"
    h = stats.t.ppf(0.975, len(per_seed) - 1) * np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))
    return f"{m:+.2f} [{m - h:+.2f}, {m + h:+.2f}]"


def pooled_table(path: Path) -> str:
    acc: dict[str, dict[str, float]] = defaultdict(dict)
    meta: dict[str, tuple[str, int]] = {}
    with open(path / "criteria_runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            acc[row["run"]][row["criterion"]] = float(row["test_acc"])
            meta[row["run"]] = (row["noise"], int(row["seed"]))
    lines = [
        "| noise | runs | " + " | ".join(SHOWN) + " |",
        "|---|---|" + "---|" * len(SHOWN),
    ]
    for noise in ("none", "symmetric", "pair", "all"):
        runs = [r for r in acc if noise == "all" or meta[r][0] == noise]
        cells = []
        for crit in SHOWN:
            by_seed: dict[int, list[float]] = defaultdict(list)
            for r in runs:
                by_seed[meta[r][1]].append(100 * (acc[r][crit] - acc[r]["val"]))
            cells.append(crossed_t([float(np.mean(v)) for v in by_seed.values()]))
        lines.append(f"| {noise} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a folder holding criteria_runs.csv")
    print(pooled_table(p.parse_args().folder))


if __name__ == "__main__":
    main()
