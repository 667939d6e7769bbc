"""The markdown report of a grid: accuracy, criterion summary, detection, flag and per-epoch tables."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from gwa.bench.results import FLAG_LAST_K, FLAG_METHODS, SCORE_CANDIDATES, RunResult, median_curve

#: Rows of the accuracy tables: (label, variant the epoch is chosen in, criterion).
TABLE_ROWS = (
    ("Val set 10% (noisy labels)", "val10", "val"),
    ("Val set 10% (clean labels)", "val10", "val_clean"),
    ("Val set 1% (noisy labels)", "val1", "val"),
    ("Val set 1% (clean labels)", "val1", "val_clean"),
    ("LabelWave", "full", "labelwave"),
    ("Gradient Disparity", "full", "grad_disparity"),
    ("GWA, paper verbatim (mean / (excess kurtosis + 1.2))", "full", "gwa_paper"),
    ("GWA, gwa default (mean / Pearson kurtosis)", "full", "gwa"),
    ("Mean alignment", "full", "align_mean"),
    ("Last epoch", "full", "last"),
    ("Oracle (best test)", "full", "oracle"),
)
REFERENCE = ("val10", "val")


def _mean_std(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return "–"
    text = f"{100 * v.mean():.1f}" + (f" ± {100 * v.std(ddof=1):.1f}" if v.size > 1 else "")
    return text


def _setting_label(setting: tuple) -> str:
    dataset, _model, noise, rate, _schedule = setting
    noise_text = (
        "clean" if noise == "none" else f"{'sym' if noise == 'symmetric' else 'asym'} {100 * rate:g}%"
    )
    return f"{dataset} {noise_text}"


def _by_setting(results: list[RunResult]) -> dict[tuple, dict[tuple[str, int], RunResult]]:
    out: dict[tuple, dict] = defaultdict(dict)
    for r in results:
        out[r.setting][(r.variant, r.seed)] = r
    return out


def _values(runs: dict, variant: str, criterion: str) -> dict[int, float]:
    return {
        seed: r.test_at[criterion] for (v, seed), r in runs.items() if v == variant and criterion in r.test_at
    }


def accuracy_tables(results: list[RunResult], rows=TABLE_ROWS) -> str:
    """Paper-Table-1-shaped tables: criteria as rows, settings as columns, one table per (model, schedule)."""
    by = _by_setting(results)
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for setting in sorted(by, key=lambda s: (s[1], s[4], s[0], s[3], s[2])):
        groups[(setting[1], setting[4])].append(setting)
    parts = []
    for (model, schedule), settings in groups.items():
        header = ["criterion", *(_setting_label(s) for s in settings)]
        lines = [
            f"#### {model.upper()}, {schedule} schedule",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for label, variant, criterion in rows:
            cells = []
            for s in settings:
                vals = _values(by[s], variant, criterion)
                cells.append(_mean_std(list(vals.values())))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        diff_cells: dict[str, list[str]] = {label: [] for label, _, _ in rows}
        for s in settings:
            ref = _values(by[s], *REFERENCE)
            for label, variant, criterion in rows:
                vals = _values(by[s], variant, criterion)
                paired = [vals[k] - ref[k] for k in vals if k in ref]
                diff_cells[label].append("–" if not paired else f"{100 * np.mean(paired):+.1f}")
        lines += [
            "",
            "Difference to the noisy 10% validation split (mean over seeds, points):",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += [f"| {label} | " + " | ".join(diff_cells[label]) + " |" for label, _, _ in rows]
        seeds = sorted({k[1] for s in settings for k in by[s]})
        lines += ["", f"Test accuracy (%) at each criterion's epoch, mean ± std over seeds {seeds}.", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def summary_table(results: list[RunResult], rows=TABLE_ROWS) -> str:
    """Criteria over all settings: mean difference to the noisy 10% split, wins/losses, regret to the oracle."""
    by = _by_setting(results)
    header = [
        "criterion",
        "settings",
        "Δ vs val 10% noisy (all)",
        "Δ (clean labels)",
        "Δ (noisy labels)",
        "better / worse than val 10% noisy",
        "regret to oracle (mean)",
        "regret (worst setting)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, variant, criterion in rows:
        diffs: list[float] = []
        regrets: list[float] = []
        noisy: list[float] = []
        clean: list[float] = []
        wins = losses = 0
        for s, runs in by.items():
            ref, vals = _values(runs, *REFERENCE), _values(runs, variant, criterion)
            oracle = _values(runs, "full", "oracle")
            paired = [vals[k] - ref[k] for k in vals if k in ref]
            if paired:
                d = float(np.mean(paired))
                diffs.append(d)
                (clean if s[2] == "none" else noisy).append(d)
                wins += d > 0
                losses += d < 0
            reg = [oracle[k] - vals[k] for k in vals if k in oracle]
            if reg:
                regrets.append(float(np.mean(reg)))

        def fmt(x):
            return "–" if not x else f"{100 * np.mean(x):+.2f}"

        lines.append(
            f"| {label} | {len(diffs)} | {fmt(diffs)} | {fmt(clean)} | {fmt(noisy)} | {wins} / {losses} | "
            f"{'–' if not regrets else f'{100 * np.mean(regrets):.2f}'} | "
            f"{'–' if not regrets else f'{100 * np.max(regrets):.2f}'} |"
        )
    return "\n".join(lines)


def candidate_rows(results: list[RunResult]) -> tuple:
    from gwa.bench.candidates import CANDIDATES, SCORE_ROW_CANDIDATES

    names = [*CANDIDATES, *SCORE_CANDIDATES, *SCORE_ROW_CANDIDATES]
    return tuple((f"candidate: {name}", "full", f"cand:{name}") for name in names)


DETECTION_SCORES = (
    ("alignment_at_epoch", "alignment at the default criterion's epoch"),
    ("alignment_last", "alignment, last epoch"),
    ("alignment_mean", "alignment, mean over epochs"),
    ("alignment_frac_negative", "fraction of epochs with alignment < 0"),
    ("loss_mean", "loss, mean over epochs"),
    ("aum", "AUM (mean margin)"),
    ("el2n_early", "EL2N at 10% of training"),
    ("el2n_mean", "EL2N, mean over epochs"),
    ("confidence", "data-map confidence (mean p_gold)"),
)


def detection_table(results: list[RunResult]) -> str:
    """AUROC / AUPRC per score and (dataset, noise), pooled over models, schedules and seeds; flag rule P/R."""
    groups: dict[tuple, list[RunResult]] = defaultdict(list)
    for r in results:
        if r.variant == "full" and r.detection:
            dataset, _m, noise, rate, _s = r.setting
            groups[(dataset, noise, rate)].append(r)
    keys = sorted(groups)
    header = ["score", *(_setting_label((d, None, n, rt, None)) for d, n, rt in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(values):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return "–"
        return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if v.size > 1 else "")

    for metric, idx in (("AUROC", 0), ("AUPRC", 1)):
        for key, label in DETECTION_SCORES:
            cells = [cell([r.detection[key][idx] for r in groups[k] if key in r.detection]) for k in keys]
            lines.append(f"| {metric}: {label} | " + " | ".join(cells) + " |")
    flag_rules = (
        ("window", "default flag rule `window` (mean alignment < 0, warm-up to the chosen epoch)"),
        ("lastk", f"`lastk` (alignment < 0 in each of the last {FLAG_LAST_K} epochs)"),
    )
    for metric in ("precision", "recall"):
        for rule, label in flag_rules:
            cells = [cell([r.flags[rule][metric] for r in groups[k] if rule in r.flags]) for k in keys]
            lines.append(f"| {metric}: {label} | " + " | ".join(cells) + " |")
    frac = [cell([r.noise_fraction for r in groups[k]]) for k in keys]
    lines.append("| fraction of mislabeled samples | " + " | ".join(frac) + " |")
    counts = [str(len(groups[k])) for k in keys]
    lines.append("| runs pooled (models x schedules x seeds) | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def flag_table(results: list[RunResult]) -> str:
    """gwa's flag rules against cleanlab, pooled over the noisy full runs that have a cleanlab result (paired)."""
    runs = [r for r in results if "cleanlab" in r.flags]
    if not runs:
        return ""
    labels = {
        "window": "gwa default: mean alignment < 0 from the warm-up to the chosen epoch (1 run)",
        "lastk": f"gwa: alignment < 0 in each of the last {FLAG_LAST_K} epochs (1 run)",
        "mean": "gwa: mean alignment over epochs < 0 (1 run)",
        "frac": "gwa: alignment < 0 in at least half the epochs (1 run)",
        "cleanlab": "cleanlab find_label_issues, 5-fold out-of-sample probabilities, folds at their last epoch "
        "(5 runs)",
        "cleanlab_es": "cleanlab, folds early-stopped on their held-out fold's noisy labels (5 runs; the same "
        "trainings, scored every epoch)",
    }
    header = ["method", "runs", "precision", "recall", "F1", "AUROC", "training sample-passes (relative)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    early_stopped = ("cleanlab_es",) if all("cleanlab_es" in r.flags for r in runs) else ()
    for method in (*FLAG_METHODS, "cleanlab", *early_stopped):
        vals = {k: np.array([r.flags[method][k] for r in runs], dtype=float) for k in runs[0].flags[method]}

        def cell(v):
            return "–" if not np.isfinite(v).any() else f"{np.nanmean(v):.3f}"

        rel = np.mean(vals["sample_passes"] / np.array([r.flags["lastk"]["sample_passes"] for r in runs]))
        lines.append(
            f"| {labels[method]} | {len(runs)} | {cell(vals['precision'])} | {cell(vals['recall'])} | "
            f"{cell(vals['f1'])} | {cell(vals['auroc'])} | {rel:.1f}x |"
        )
    est = np.array([r.noise_estimate for r in runs], dtype=float)
    truth = np.array([r.noise_fraction for r in runs])
    lines += [
        "",
        (
            f"Estimated label-noise rate (share of samples with mean alignment < 0) against the truth over "
            f"these runs: mean absolute error {100 * np.mean(np.abs(est - truth)):.1f} points."
        ),
    ]
    return "\n".join(lines)


#: Settings up to this count get per-epoch curves in the report (the failure-case grid).
MAX_CURVE_SETTINGS = 4


def curve_tables(results: list[RunResult]) -> str:
    """Per-epoch statistics of the first seed's full run of each setting: where the paper's ratio has its pole."""
    from gwa.rundir import load_run

    firsts: dict[tuple, RunResult] = {}
    for r in sorted(results, key=lambda r: r.seed):
        if r.variant == "full":
            firsts.setdefault(r.setting, r)
    if not firsts or len(firsts) > MAX_CURVE_SETTINGS:
        return ""
    parts = []
    for setting, r in sorted(firsts.items()):
        run = load_run(r.path)
        a = run.score_matrix("alignment").astype(np.float64)
        mask = run.noise_mask.astype(bool) if run.noise_mask is not None else np.zeros(a.shape[1], dtype=bool)
        median = median_curve(a)
        header = [
            "epoch",
            "test acc",
            "mean γ",
            "median γ",
            "excess kurtosis",
            "κ + 1.2",
            "GWA (paper)",
            "flagged",
            "mean / (κ + 3)",
            "share γ < 0",
            "mean γ clean",
            "mean γ mislabeled",
        ]
        lines = [
            f"#### {_setting_label(setting)}, {setting[1]}, {setting[4]} schedule, seed {r.seed}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for i, row in enumerate(run.metrics):
            g = a[i]
            seen = np.isfinite(g)
            kurt = row.get("align_excess_kurtosis")
            kurt_cells = "– | –" if kurt is None else f"{kurt:.2f} | {kurt + 1.2:.2f}"  # None: undefined
            mean = row.get("align_mean")
            gwa_text = "∞" if row.get("gwa_paper") is None else f"{row['gwa_paper']:.3f}"
            noisy = f"{np.mean(g[seen & mask]):.4f}" if (seen & mask).any() else "–"
            pearson = "–" if row.get("gwa") is None else f"{row['gwa']:.4f}"
            lines.append(
                f"| {row['epoch']} | {100 * row['test_acc']:.1f} | {mean:.4f} | {median[i]:.4f} | "
                f"{kurt_cells} | {gwa_text} | {'yes' if row.get('gwa_paper_flagged') else ''} | "
                f"{pearson} | {np.mean(g[seen] < 0):.3f} | {np.mean(g[seen & ~mask]):.4f} | {noisy} |"
            )
        picks = ", ".join(f"{k.removeprefix('cand:')} → {e}" for k, e in r.chosen.items())
        lines += ["", f"Chosen epochs: {picks}.", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def render(results: list[RunResult], meta: dict) -> str:
    """The markdown report: both tables, the criterion summary, the research candidates, the provenance."""
    n_runs = len(results)
    train_s = sum(r.wall_time for r in results)
    parts = [
        "## Provenance",
        "",
        f"- training command: `{meta.get('command', 'unknown')}`",
        f"- tables rebuilt with: `{meta.get('aggregate_command', 'unknown')}`",
        f"- machine: {meta.get('machine', 'unknown')}",
        (
            f"- {n_runs} runs; summed training time {train_s / 60:.1f} min; bench wall time "
            f"{meta.get('elapsed_s', float('nan')) / 60:.1f} min with {meta.get('workers', '?')} worker(s)"
        ),
        "",
        "## Stop criteria: test accuracy at the chosen epoch",
        "",
        accuracy_tables(results),
        "",
        "## Stop criteria over all settings",
        "",
        (
            "Δ: test accuracy at the criterion's epoch minus test accuracy at the epoch chosen by the noisy 10% "
            "validation split (same setting and seed), averaged over seeds, then over settings (points). Regret: "
            "oracle (best test epoch of the full run) minus the criterion, same averaging."
        ),
        "",
        summary_table(results, TABLE_ROWS + candidate_rows(results)),
        "",
        "## Mislabel detection (full-data runs with label noise)",
        "",
        (
            "AUROC / AUPRC against the noise mask, every score oriented so that higher = more likely mislabeled; "
            "mean ± std over the pooled runs."
        ),
        "",
        detection_table(results),
        "",
    ]
    flags = flag_table(results)
    if flags:
        parts += [
            "## Mislabel flags: gwa (one run) against cleanlab (K-fold cross-validation)",
            "",
            "Mean over the noisy full runs with a cleanlab result; F1 = 0 where nothing is flagged.",
            "",
            flags,
            "",
        ]
    curves = curve_tables(results)
    if curves:
        parts += ["## Per-epoch statistics of the alignment distribution (first seed)", "", curves, ""]
    return "\n".join(parts)
