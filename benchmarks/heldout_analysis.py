"""Tables of docs/protocol.md (section 4 and 5) from the held-out run directories and cleanlab results alone.

    PYTHONPATH=src python benchmarks/heldout_analysis.py /work/evid_runs/heldout > heldout.md

Reads every complete run under RUNS (``gwa.bench.results.collect``); pairs each full run with the val10 run of the
same setting and seed; prints per-setting and pooled paired differences to the noisy 10% split with two-level
bootstrap intervals, the success criteria S3a/S3b/S5a-c, flag quality against cleanlab, the noise-rate errors and
how often each trust diagnostic fires.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from gwa import policy
from gwa.bench import paired
from gwa.bench.grid import HELDOUT2_SEEDS, HELDOUT_SEEDS
from gwa.bench.results import collect
from gwa.rundir import load_run

CRITERIA = (
    ("gwa", "gwa default"),
    ("cand:gwa_warmup100", "candidate gwa_warmup100 (registered for H)"),
    ("cand:gwa_after_transient", "candidate gwa_after_transient (registered for H3)"),
    ("cand:gwa_memorisation", "candidate gwa_memorisation (registered for H')"),
    ("gwa_paper", "GWA paper verbatim"),
    ("align_mean", "mean alignment"),
    ("labelwave", "LabelWave"),
    ("grad_disparity", "Gradient Disparity"),
    ("last", "last epoch"),
    ("val_clean", "val 10% clean labels"),
    ("oracle", "oracle (bound)"),
)
#: Flag rows of the table: gwa's rules from one run, cleanlab.
FLAG_ROWS = ("window", "lastk", "mean", "frac", "cleanlab")
#: Flag rules judged against cleanlab (S5a/S5b): the default, the default before H' and the rules registered for
#: H' (``window`` was registered as ``cand:window_mean`` and promoted after H').
FLAG_VERDICTS = ("window", "lastk", "frac")
FLAG_LABELS = {
    "window": "window (gwa default; registered for H' as cand:window_mean)",
    "lastk": "lastk (the default until H')",
    "mean": "mean (all epochs)",
    "frac": "frac (registered for H')",
    "cleanlab": "cleanlab (5-fold)",
}
NOISE_ESTIMATORS = (
    ("negative_share", "negative_share (gwa default)"),
    ("cand:window_share", "cand:window_share (registered for H')"),
)
BLOCK = {
    ("mnist1d", "cnn"): "H1 MNIST-1D CNN",
    ("fashion-mnist", "mlp"): "H2 FMNIST MLP",
    ("fashion-mnist", "cnn"): "H3 FMNIST CNN",
}


def noise_label(noise: str, rate: float) -> str:
    return "clean" if noise == "none" else f"{noise[:3]} {100 * rate:g}%"


def setting_label(s: tuple) -> str:
    schedule = "" if s[4] == "constant" else f", {s[4]}"
    return f"{BLOCK.get((s[0], s[1]), s[0] + ' ' + s[1])}, {noise_label(s[2], s[3])}{schedule}"


def pairs(results) -> dict[tuple, dict[int, dict]]:
    """``{setting: {seed: {"full": RunResult, "val10": RunResult}}}`` for complete pairs only."""
    by: dict[tuple, dict[int, dict]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        by[r.setting][r.seed][r.variant] = r
    return {
        s: {k: v for k, v in seeds.items() if {"full", "val10"} <= set(v)}
        for s, seeds in by.items()
        if any({"full", "val10"} <= set(v) for v in seeds.values())
    }


def delta(run_pair: dict, criterion: str) -> float:
    variant = "val10" if criterion.startswith("val") else "full"
    return 100 * (run_pair[variant].test_at[criterion] - run_pair["val10"].test_at["val"])


def criterion_tables(by) -> list[str]:
    settings = sorted(by, key=lambda s: (s[0], s[1], s[2], s[3]))
    out = [
        "### Per setting: Δ test accuracy vs the noisy 10% split (points), mean over seeds [seed-bootstrap 95%]",
        "",
        "| criterion | " + " | ".join(f"{setting_label(s)} (n={len(by[s])})" for s in settings) + " |",
        "|" + "---|" * (len(settings) + 1),
    ]
    val_acc = [f"{100 * np.mean([p['val10'].test_at['val'] for p in by[s].values()]):.1f}" for s in settings]
    out.append("| val 10% noisy: test accuracy (%) | " + " | ".join(val_acc) + " |")
    for key, label in CRITERIA:
        cells = [
            paired.format_interval(
                paired.two_level_bootstrap({s: [delta(p, key) for p in by[s].values()]}), digits=1
            )
            for s in settings
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    groups = {
        "symmetric, MLP": lambda s: s[2] == "symmetric" and s[1] == "mlp",
        "symmetric, CNN": lambda s: s[2] == "symmetric" and s[1] == "cnn",
        "asymmetric, MLP": lambda s: s[2] == "asymmetric" and s[1] == "mlp",
        "asymmetric, CNN": lambda s: s[2] == "asymmetric" and s[1] == "cnn",
        "all noisy": lambda s: s[2] != "none",
        "clean": lambda s: s[2] == "none",
        "all": lambda s: True,
    }
    out += [
        "",
        "### Pooled: Δ vs the noisy 10% split (points), mean of setting means [two-level bootstrap 95%]",
        "",
        "| criterion | "
        + " | ".join(f"{g} ({sum(map(f, settings))} settings)" for g, f in groups.items())
        + " |",
        "|" + "---|" * (len(groups) + 1),
    ]
    for key, label in CRITERIA:
        cells = []
        for f in groups.values():
            d = {s: [delta(p, key) for p in by[s].values()] for s in settings if f(s)}
            cells.append(paired.format_interval(paired.two_level_bootstrap(d)))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    # success criteria of item 3, for the default, the candidates and (for reference) the paper's rule
    for key, label in (
        ("gwa", "gwa default"),
        *[(k, v) for k, v in CRITERIA if k.startswith("cand:")],
        ("gwa_paper", "GWA paper verbatim (reference)"),
    ):
        out += ["", f"### Item 3 success criteria: {label}", ""]
        for g in ("symmetric, MLP", "symmetric, CNN", "asymmetric, MLP", "asymmetric, CNN"):
            d = {s: [delta(p, key) for p in by[s].values()] for s in settings if groups[g](s)}
            est = paired.two_level_bootstrap(d)
            verdict = (
                "not evaluated (no run)"
                if not d
                else ("met" if est[0] >= -1 else f"missed by {-1 - est[0]:.2f}")
                + ("; demonstrated (low >= -1)" if d and est[1] >= -1 else "")
            )
            out.append(f"- S3a {g}: {paired.format_interval(est)} -> {verdict}")
        per_setting = {s: float(np.mean([delta(p, key) for p in by[s].values()])) for s in settings}
        if per_setting:
            worst = min(per_setting, key=per_setting.get)
            below = [setting_label(s) for s in settings if per_setting[s] < -3]
            out.append(
                f"- S3b: worst setting {setting_label(worst)} at {per_setting[worst]:+.2f}; settings below -3: "
                f"{len(below)} of {len(settings)} ({', '.join(below) or 'none'}) -> "
                f"{'met' if not below else 'missed'}"
            )
    return out


def flag_tables(by) -> list[str]:
    runs = {(s, k): p["full"] for s, seeds in by.items() for k, p in seeds.items() if s[2] != "none"}
    with_cl = {key: r for key, r in runs.items() if "cleanlab" in r.flags}
    out = [
        "",
        f"### Mislabel flags: {len(with_cl)} of {len(runs)} noisy full runs have a cleanlab result",
        "",
    ]
    if with_cl:
        out += ["| method | precision | recall | F1 | AUROC | sample-passes |", "|---|---|---|---|---|---|"]
        for m in FLAG_ROWS:
            v = {
                k: np.array([r.flags[m][k] for r in with_cl.values()], float)
                for k in with_cl[next(iter(with_cl))].flags[m]
            }
            out.append(
                f"| {FLAG_LABELS.get(m, m)} | {np.nanmean(v['precision']):.3f} | "
                f"{np.nanmean(v['recall']):.3f} | {np.nanmean(v['f1']):.3f} | {np.nanmean(v['auroc']):.3f} | "
                f"{np.mean(v['sample_passes']):.0f} |"
            )
        mean_auroc = [r.detection["alignment_mean"][0] for r in with_cl.values()]
        out.append(
            f"| ranking: mean alignment over all epochs (gwa, secondary) | | | | {np.mean(mean_auroc):.3f} | |"
        )
        for rule in FLAG_VERDICTS:
            out += ["", f"Item 5 success criteria: {FLAG_LABELS[rule]} against cleanlab", ""]
            for metric, code in (("f1", "S5a"), ("auroc", "S5b")):
                d = defaultdict(list)
                for (s, _k), r in with_cl.items():
                    d[s].append(r.flags[rule][metric] - r.flags["cleanlab"][metric])
                est = paired.two_level_bootstrap(d)
                shown = "; demonstrated (interval above 0)" if est[1] > 0 else ""
                out.append(
                    f"- {code}: {rule} minus cleanlab, {metric}: {paired.format_interval(est, digits=3)} -> "
                    f"{'met' if est[0] > 0 else 'missed'}{shown} ({len(d)} settings)"
                )
        names = (*FLAG_VERDICTS, "cleanlab")
        by_group = defaultdict(list)
        for (s, _k), r in with_cl.items():
            by_group[f"{BLOCK.get((s[0], s[1]))}, {s[2]}"].append(
                [r.flags[m]["f1"] for m in names] + [r.flags[m]["auroc"] for m in names]
            )
        out += [
            "",
            "| block, noise | runs | "
            + " | ".join(f"F1 {m}" for m in names)
            + " | "
            + " | ".join(f"AUROC {m}" for m in names)
            + " |",
            "|" + "---|" * (2 + 2 * len(names)),
        ]
        for g, v in sorted(by_group.items()):
            a = np.array(v)
            out.append(f"| {g} | {len(v)} | " + " | ".join(f"{x:.3f}" for x in a.mean(axis=0)) + " |")
    out += [
        "",
        "### Noise-rate estimates minus the truth (points), full runs",
        "",
        "| estimator | noise | runs | mean error | mean absolute error | S5c (MAE <= 3, symmetric) |",
        "|---|---|---|---|---|---|",
    ]
    for estimator, label in NOISE_ESTIMATORS:
        err = defaultdict(list)
        for s, seeds in by.items():
            for p in seeds.values():
                r = p["full"]
                if estimator in r.noise_estimates:
                    err[s[2]].append(100 * (r.noise_estimates[estimator] - r.noise_fraction))
        for kind in ("symmetric", "asymmetric", "none"):
            e = np.array(err.get(kind, []), float)
            if not e.size:
                continue
            mae = float(np.mean(np.abs(e)))
            verdict = ("met" if mae <= 3 else f"missed by {mae - 3:.2f}") if kind == "symmetric" else ""
            out.append(
                f"| {label} | {noise_label(kind, 0) if kind == 'none' else kind} | {e.size} | {e.mean():+.2f} | "
                f"{mae:.2f} | {verdict} |"
            )
    return out


def diagnostic_table(by) -> list[str]:
    fired = {"loses > 2": defaultdict(int), "others": defaultdict(int)}
    count = {"loses > 2": 0, "others": 0}
    for seeds in by.values():
        for p in seeds.values():
            run = load_run(p["full"].path)
            diags = policy.diagnose(run.metrics, alignment=run.score_matrix("alignment"))
            group = "loses > 2" if delta(p, "gwa") < -2 else "others"
            count[group] += 1
            for code in {d.code for d in diags} | ({"any"} if diags else set()):
                fired[group][code] += 1
    codes = sorted({c for g in fired.values() for c in g})
    out = [
        "",
        "### Trust diagnostics on the full runs (share of runs where each fires)",
        "",
        "| diagnostic | runs where gwa loses > 2 points to val10 | other runs |",
        "|---|---|---|",
    ]
    for c in codes:
        cells = [f"{fired[g][c]}/{count[g]}" for g in ("loses > 2", "others")]
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return out


def provenance(seeds: set[int]) -> str:
    """Which grid these seeds are, and for which rules its numbers are held-out (docs/protocol.md)."""
    if seeds and seeds <= set(HELDOUT2_SEEDS):
        return (
            f"Grid H' (seeds {sorted(seeds)}): held-out for the default, the paper's rule, the baselines and every "
            "candidate registered in docs/protocol.md before H' was read."
        )
    if seeds and seeds <= set(HELDOUT_SEEDS):
        return (
            f"Grid H (seeds {sorted(seeds)}): held-out for the default, the paper's rule, the baselines and "
            "gwa_warmup100 (gwa_after_transient: H3 only); in-sample for every rule registered for H' "
            "(gwa_memorisation, window_mean, frac as a registered rule, window_share), which were designed on it."
        )
    return f"Seeds {sorted(seeds)}: not a pre-registered held-out grid (in-sample for every rule)."


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs")
    p.add_argument("--only", metavar="DATASET:MODEL", help="one block, e.g. fashion-mnist:cnn (H3)")
    args = p.parse_args()
    results = collect(Path(args.runs), log=lambda m: None)
    if args.only:
        dataset, model = args.only.split(":")
        results = [r for r in results if r.setting[:2] == (dataset, model)]
    by = pairs(results)
    n = sum(len(v) for v in by.values())
    lines = [
        provenance({k for seeds in by.values() for k in seeds}),
        "",
        f"Complete (full, val10) pairs: {n} over {len(by)} settings; seeds per setting: "
        + ", ".join(f"{setting_label(s)}: {sorted(v)}" for s, v in sorted(by.items())),
        "",
    ]
    lines += criterion_tables(by) + flag_tables(by) + diagnostic_table(by)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
