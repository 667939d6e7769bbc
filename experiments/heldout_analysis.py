"""Every held-out table (docs/protocol.md, sections 4, 5 and H″) from a per-run results file alone.

    PYTHONPATH=src python experiments/heldout_analysis.py --per-run docs/data/heldout/h2.csv > tables.md
    PYTHONPATH=src python experiments/heldout_analysis.py RUNS --export h2.csv     # run directories -> file
    PYTHONPATH=src python experiments/heldout_analysis.py --per-run a.csv --rerun b.csv   # re-execution check

The per-run file (:mod:`gwa.bench.perrun`) holds one row per run x criterion; the numbers come from
:mod:`gwa.bench.heldout` (both Δs to the noisy 10% split, flags against both cleanlab recipes, noise-rate errors,
diagnostic firing) with crossed-seed intervals (:mod:`gwa.bench.crossed`). With ``--rerun`` every verdict is
computed on both files and one that flips is printed as *unsettled*.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gwa.bench import crossed, heldout, perrun
from gwa.bench.heldout import Rows

#: Table rows: (variant the criterion chooses in, criterion, label). ``cand:`` and other stop criteria found in
#: the file are added after the registered ones.
CRITERIA = (
    ("full", "gwa", "gwa default"),
    ("full", "gwa_paper", "GWA paper verbatim"),
    ("full", "veto", "gwa with the 2% veto"),
    ("full", "align_mean", "mean alignment"),
    ("full", "labelwave", "LabelWave"),
    ("full", "grad_disparity", "Gradient Disparity"),
    ("full", "last", "last epoch"),
    ("val10", "val_clean", "val 10% clean labels"),
    ("val2", "val", "val 2% noisy labels"),
    ("full", "oracle", "oracle (bound)"),
)
#: Criteria judged by S3a/S3b.
VERDICT_CRITERIA = ("gwa", "gwa_paper", "veto")
FLAG_RULES = ("window", "lastk", "frac")
CLEANLAB = ("cleanlab", "cleanlab_es")
NOISE_ESTIMATORS = ("negative_share", "cand:window_share")
BLOCK = {
    ("mnist1d", "cnn"): "MNIST-1D CNN",
    ("fashion-mnist", "mlp"): "FMNIST MLP",
    ("fashion-mnist", "cnn"): "FMNIST CNN",
    ("fashion-mnist", "resnet"): "FMNIST ResNet",
}
NOISE_WORD = {"none": "clean", "symmetric": "symmetric", "asymmetric": "class-pair", "instance": "instance"}


def setting_label(s: tuple) -> str:
    noise = "clean" if s[2] == "none" else f"{s[2][:3]} {100 * s[3]:g}%"
    schedule = "" if s[4] == "constant" else f", {s[4]}"
    return f"{BLOCK.get((s[0], s[1]), s[0] + ' ' + s[1])}, {noise}{schedule}"


def criteria(data: Rows) -> list[tuple[str, str, str]]:
    present = {(v, c) for (_s, _k, v, c) in data.test}
    rows = [c for c in CRITERIA if (c[0], c[1]) in present]
    extra = sorted({c for v, c in present if v == "full"} - {c[1] for c in CRITERIA})
    return rows[:2] + [("full", c, c) for c in extra if c.startswith("cand:")] + rows[2:]


def groups(settings: list[tuple]) -> dict[str, list[tuple]]:
    """Pooled groups: each (noise family, model) present, all noisy settings, clean."""
    out: dict[str, list[tuple]] = {}
    for noise in ("symmetric", "asymmetric", "instance"):
        for model in sorted({s[1] for s in settings}):
            members = [s for s in settings if s[2] == noise and s[1] == model]
            if members:
                out[f"{NOISE_WORD[noise]}, {model.upper()}"] = members
    out["all noisy"] = [s for s in settings if s[2] != "none"]
    out["clean"] = [s for s in settings if s[2] == "none"]
    return {k: v for k, v in out.items() if v}


def delta_tables(data: Rows, which: str) -> list[str]:
    settings = data.settings
    title = {
        "deployed": "deployed (the criterion's own run, 100% data for gwa, against the 10% split's run)",
        "selection": "selection-only (the criterion applied inside the 10% split's own run)",
    }[which]
    out = [
        f"### Δ {title}: per setting, mean over seeds [t 95%] (points)",
        "",
        "| criterion | "
        + " | ".join(f"{setting_label(s)} (n={len(data.seeds(s))})" for s in settings)
        + " |",
        "|" + "---|" * (len(settings) + 1),
    ]
    ref = [
        np.mean([v for (s2, _k, var, c), v in data.test.items() if s2 == s and (var, c) == heldout.REFERENCE])
        for s in settings
    ]
    out.append("| val 10% noisy: test accuracy (%) | " + " | ".join(f"{100 * x:.1f}" for x in ref) + " |")
    for variant, key, label in criteria(data):
        d = heldout.deltas(data, variant, key, which)
        cells = [crossed.setting_interval(d[s].values()).format(1) if s in d else "–" for s in settings]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    grouped = groups(settings)
    for estimand, fn in (("these settings", crossed.settings_interval), ("family", crossed.family_interval)):
        out += [
            "",
            f"### Δ {which}, pooled: mean of setting means [95% crossed-seed interval; estimand: {estimand}]",
            "",
            "| criterion | " + " | ".join(f"{g} ({len(m)} settings)" for g, m in grouped.items()) + " |",
            "|" + "---|" * (len(grouped) + 1),
        ]
        for variant, key, label in criteria(data):
            d = heldout.deltas(data, variant, key, which)
            cells = [fn({s: d[s] for s in members if s in d}).format() for members in grouped.values()]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def verdicts(data: Rows) -> dict[str, str]:
    """Every registered verdict: S3a per group and Δ, S3b per Δ, S5a/S5b per flag rule against each cleanlab."""
    out = {}
    grouped = {g: m for g, m in groups(data.settings).items() if g not in ("all noisy", "clean")}
    for key in VERDICT_CRITERIA:
        for which in heldout.DELTAS:
            d = heldout.deltas(data, "full", key, which)
            if not d:
                continue
            for g, members in grouped.items():
                interval = crossed.settings_interval({s: d[s] for s in members if s in d})
                out[f"S3a {key} {which} {g}"] = f"{heldout.s3a(interval)} ({interval.format()})"
            verdict, below = heldout.s3b(d)
            out[f"S3b {key} {which}"] = f"{verdict} ({len(below)} of {len(d)} settings below -3)"
    for rule in FLAG_RULES:
        for baseline in CLEANLAB:
            for metric, code in (("f1", "S5a"), ("auroc", "S5b")):
                d = heldout.flag_diffs(data, rule, baseline, metric)
                if d:
                    interval = crossed.settings_interval(d)
                    out[f"{code} {rule} vs {baseline}"] = f"{heldout.beats(interval)} ({interval.format(3)})"
    return out


def flag_tables(data: Rows) -> list[str]:
    methods = [m for m in (*FLAG_RULES, "mean", *CLEANLAB) if heldout.flag_values(data, m, "f1")]
    if not methods:
        return ["", "### Mislabel flags: no flag rows in this file"]
    out = [
        "",
        "### Mislabel flags on the noisy full runs (mean over runs)",
        "",
        "| method | runs | precision | recall | F1 | AUROC | training sample-passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        cols = {k: np.array(list(heldout.flag_values(data, m, k).values()), float) for k in ("precision", "recall", "f1", "auroc", "sample_passes")}  # fmt: skip
        out.append(
            f"| {m} | {cols['f1'].size} | {np.nanmean(cols['precision']):.3f} | {np.nanmean(cols['recall']):.3f} | "
            f"{np.nanmean(cols['f1']):.3f} | {np.nanmean(cols['auroc']):.3f} | {np.mean(cols['sample_passes']):.0f} |"
        )
    out += [
        "",
        "cleanlab_es shares cleanlab's trainings and adds one forward pass of each held-out fold per epoch.",
        "",
        "Rule minus cleanlab, same runs [95% crossed-seed interval, these settings]:",
        "",
    ]
    for rule in FLAG_RULES:
        for baseline in CLEANLAB:
            for metric in ("f1", "auroc"):
                d = heldout.flag_diffs(data, rule, baseline, metric)
                if d:
                    out.append(f"- {rule} − {baseline}, {metric}: {crossed.settings_interval(d).format(3)}")
    return out


def noise_rate_table(data: Rows) -> list[str]:
    out = [
        "",
        "### Noise-rate estimate minus the truth (points), full runs",
        "",
        "| estimator | noise | runs | mean error | mean absolute error |",
        "|---|---|---|---|---|",
    ]
    for estimator in NOISE_ESTIMATORS:
        for kind, e in sorted(heldout.noise_rate_errors(data, estimator).items()):
            out.append(f"| {estimator} | {NOISE_WORD.get(kind, kind)} | {e.size} | {e.mean():+.2f} | {np.abs(e).mean():.2f} |")  # fmt: skip
    return out


def diagnostic_table(data: Rows) -> list[str]:
    counts, runs = heldout.diagnostic_firing(data)
    out = [
        "",
        "### Trust diagnostics on the full runs (runs where each fires)",
        "",
        "| diagnostic | runs where gwa loses > 2 points (deployed) | other runs |",
        "|---|---|---|",
    ]
    for code in sorted(counts):
        out.append(f"| {code} | {counts[code]['loses']}/{runs['loses']} | {counts[code]['others']}/{runs['others']} |")  # fmt: skip
    return out


def render(data: Rows, rerun: Rows | None = None) -> str:
    seeds = sorted({k for s in data.settings for k in data.seeds(s)})
    grids = sorted({r["grid"] for r in data.rows})
    lines = [
        f"Grid(s) {', '.join(grids)}: {len(data.settings)} settings, seeds {seeds}.",
        "",
        *delta_tables(data, "deployed"),
        "",
        *delta_tables(data, "selection"),
        *flag_tables(data),
        *noise_rate_table(data),
        *diagnostic_table(data),
        "",
        "### Verdicts" + (" (with the re-execution check)" if rerun is not None else ""),
        "",
    ]
    mine = verdicts(data)
    shown = heldout.settle(mine, verdicts(rerun)) if rerun is not None else mine
    lines += [f"- {k}: {v}" for k, v in shown.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "runs", nargs="?", help="a folder of run directories (read with gwa.bench.results.collect)"
    )
    p.add_argument(
        "--per-run", metavar="CSV", help="read the per-run results file instead of run directories"
    )
    p.add_argument("--export", metavar="CSV", help="write the per-run results file of RUNS and stop")
    p.add_argument("--grid", help="grid name written to --export (default from the seeds: H, H', dev)")
    p.add_argument(
        "--rerun", metavar="CSV", help="per-run file of a perturbed re-execution: mark flipped verdicts"
    )
    p.add_argument("--only", metavar="DATASET:MODEL", help="one block, e.g. fashion-mnist:cnn")
    args = p.parse_args(argv)
    if (args.runs is None) == (args.per_run is None):
        p.error("Expected exactly one of RUNS and --per-run.")
    if args.per_run:
        rows = perrun.read_csv(Path(args.per_run))
    else:
        from gwa.bench.results import collect

        rows = perrun.rows_from_runs(collect(Path(args.runs), log=lambda m: None), grid=args.grid)
        if args.export:
            perrun.write_csv(rows, Path(args.export))
            return
    if args.only:
        dataset, model = args.only.split(":")
        rows = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
    rerun = Rows(perrun.read_csv(Path(args.rerun))) if args.rerun else None
    print(render(Rows(rows), rerun), end="")


if __name__ == "__main__":
    main()
