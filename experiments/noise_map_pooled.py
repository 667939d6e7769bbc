"""Pooled tables of a noise-map grid from its committed per-run files: no raw run needed.

From ``criteria_runs.csv`` (``experiments/noise_map.py``): per noise family and for all runs, each criterion's test
accuracy minus the 10% split's choice, in points. From ``flags_runs.csv`` (``experiments/noise_map_flags.py``), where
it holds cleanlab's rows: gwa's flag rules minus cleanlab's two recipes, F1 and AUROC, paired run by run. Every cell
is the mean over seeds with a Student t 95% interval over the per-seed means of the group's settings (a seed fixes
subset, noise and initialisation in every setting: the design is crossed):

    python experiments/noise_map_pooled.py docs/data/noise-map-replication
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from gwa.policy._noise_map import MAX_AMBIGUOUS

SHOWN = ("gwa", "gwa_paper", "gwa_memorisation", "veto", "val2", "last")


def crossed_t(per_seed: list[float], digits: int = 2) -> str:
    m = float(np.mean(per_seed))
    if len(per_seed) < 2:
        return f"{m:+.{digits}f} (1 seed)"
    h = stats.t.ppf(0.975, len(per_seed) - 1) * np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))
    return f"{m:+.{digits}f} [{m - h:+.{digits}f}, {m + h:+.{digits}f}]"


def pooled_table(path: Path) -> str:
    """Per noise family (and, for the README's rows, per noise family and model type), Δ to the 10% split."""
    acc: dict[str, dict[str, float]] = defaultdict(dict)
    meta: dict[str, tuple[str, int, str]] = {}
    with open(path / "criteria_runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            acc[row["run"]][row["criterion"]] = float(row["test_acc"])
            meta[row["run"]] = (row["noise"], int(row["seed"]), row["family"].split()[-1])

    def cells(runs: list[str]) -> str:
        out = []
        for crit in SHOWN:
            by_seed: dict[int, list[float]] = defaultdict(list)
            for r in runs:
                by_seed[meta[r][1]].append(100 * (acc[r][crit] - acc[r]["val"]))
            out.append(crossed_t([float(np.mean(v)) for v in by_seed.values()]))
        return " | ".join(out)

    lines = ["| noise | model | runs | " + " | ".join(SHOWN) + " |", "|---|---|---|" + "---|" * len(SHOWN)]
    for noise in ("none", "symmetric", "pair", "all"):
        runs = [r for r in acc if noise == "all" or meta[r][0] == noise]
        lines.append(f"| {noise} | all | {len(runs)} | {cells(runs)} |")
        if noise in ("symmetric", "pair"):
            for model in sorted({meta[r][2] for r in runs}):
                some = [r for r in runs if meta[r][2] == model]
                lines.append(f"| {noise} | {model} | {len(some)} | {cells(some)} |")
    return "\n".join(lines)


FLAG_PAIRS = (("pair_aware", "cleanlab_early"), ("pair_aware", "cleanlab_last"), ("window", "cleanlab_early"))


def flags_table(path: Path) -> str | None:
    """gwa's flag rules minus cleanlab's, paired on the runs that carry cleanlab's folds; None where none do."""
    score: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (run, rule) -> metric
    meta: dict[str, tuple[str, str, int]] = {}
    with open(path / "flags_runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["f1"]:
                score[(row["run"], row["rule"])] = {m: float(row[m]) for m in ("f1", "auroc")}
                meta[row["run"]] = (row["family"], row["noise"], int(row["seed"]))
    runs = sorted({r for r, rule in score if rule == "cleanlab_early"})
    if not runs:
        return None
    seeds = sorted({meta[r][2] for r in runs})
    lines = [
        f"gwa's flag rules minus cleanlab's (paired per run; seeds {', '.join(map(str, seeds))}):",
        "",
        "| family | noise | runs | "
        + " | ".join(f"{a} − {b} {m}" for a, b in FLAG_PAIRS for m in ("F1", "AUROC"))
        + " |",
        "|---|---|---|" + "---|" * (2 * len(FLAG_PAIRS)),
    ]
    families = sorted({meta[r][0] for r in runs})
    for family in [*families, "all"]:
        for noise in ("symmetric", "pair"):
            group = [r for r in runs if meta[r][1] == noise and family in ("all", meta[r][0])]
            cells = []
            for a, b in FLAG_PAIRS:
                for m in ("f1", "auroc"):
                    by_seed: dict[int, list[float]] = defaultdict(list)
                    for r in group:
                        by_seed[meta[r][2]].append(score[(r, a)][m] - score[(r, b)][m])
                    cells.append(crossed_t([float(np.mean(v)) for v in by_seed.values()], digits=3))
            lines.append(f"| {family} | {noise} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def firing_table(path: Path) -> str | None:
    """How often each warning fires where the default loses more than 2 points to the 10% split and elsewhere."""
    with open(path / "noise_map_runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    codes = [c for c in ("class_conditional", "split_disagrees", "split_disagrees_2pct") if c in runs[0]]
    if "split_disagrees" not in codes:
        return None
    lines = [
        "| warning | fires where the default loses | fires where it does not |",
        "|---|---|---|",
    ]
    # Two post-hoc signals, neither a gwa warning: gwa's own candidates disagree by 5+ epochs; the noise map's
    # ambiguous share above its cap (MAX_AMBIGUOUS).
    epochs: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path / "criteria_runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            epochs[row["run"]][row["criterion"]] = int(row["epoch"])
    candidates = ("gwa", "class_memorisation", "class_ceiling", "last")
    for r in runs:
        chosen = [epochs[r["run"]][c] for c in candidates]
        r["spread of 5+ epochs among gwa's candidates"] = str(int(max(chosen) - min(chosen) >= 5))
        r["ambiguous share above the cap"] = str(int(float(r["ambiguous"]) > MAX_AMBIGUOUS))
    lost = [r for r in runs if r["loses"] == "1"]
    kept = [r for r in runs if r["loses"] == "0"]
    for code in (*codes, "spread of 5+ epochs among gwa's candidates", "ambiguous share above the cap"):
        a, b = sum(r[code] == "1" for r in lost), sum(r[code] == "1" for r in kept)
        shown = f"`{code}`" if code in codes else f"{code} (post hoc)"
        lines.append(f"| {shown} | {a}/{len(lost)} | {b}/{len(kept)} |")
    by_setting: dict[tuple[str, str], int] = defaultdict(int)
    for r in lost:
        by_setting[(r["family"], r["noise"])] += 1
    lines.append("")
    lines.append(
        "Runs where the default loses, by family and noise: "
        + ", ".join(f"{fam} {noise} {n}" for (fam, noise), n in sorted(by_setting.items()))
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a folder holding criteria_runs.csv (and flags_runs.csv)")
    folder = p.parse_args().folder
    print(pooled_table(folder))
    flags = flags_table(folder) if (folder / "flags_runs.csv").exists() else None
    if flags:
        print("\n" + flags)
    firing = firing_table(folder) if (folder / "noise_map_runs.csv").exists() else None
    if firing:
        print("\n" + firing)


if __name__ == "__main__":
    main()
