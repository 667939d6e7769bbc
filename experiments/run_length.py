"""Issue 12, item 2(b): the failing digits CNN at 10x the optimizer steps (200 epochs = 2,000 steps).

Trains (resumably, one process) the bench's digits CNN (width 16, Adam 1e-3, batch 128) for 200 epochs, clean and
40% symmetric noise, full and val10 variants, then applies every criterion of :mod:`gwa.policy` twice to the same
runs: to the first 10% (epochs 1-20, warm-up 2 epochs, i.e. the dev grid's run length) and to the whole run
(warm-up 20 epochs). With a constant learning rate the first 20 epochs are bit-identical to a 20-epoch run (the
batch order depends on (seed, epoch) only); with cosine they are not (the schedule is stretched).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/run_length.py --out /work/evid_runs/run_length \
        --schedules constant --seeds 0,1,2
    PYTHONPATH=src python experiments/run_length.py --out /work/evid_runs/run_length --analyse-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gwa import policy
from gwa.bench.grid import Job, is_complete, run_jobs
from gwa.rundir import load_run

CRITERIA = ("gwa", "gwa_paper", "align_mean", "labelwave", "grad_disparity", "last", "oracle")


#: (dataset, epochs of the long run, model options): the digits CNN of the dev grid, and the MNIST-1D CNN of the
#: held-out grid's block H1 (30 epochs there) at 10x its steps, on development seeds.
MODELS = {"digits": (200, (("width", 16),)), "mnist1d": (300, (("mnist1d_samples", 5000), ("width", 32)))}


def jobs(schedules, seeds, dataset: str = "digits") -> list[Job]:
    epochs, options = MODELS[dataset]
    return [
        Job(dataset, "cnn", noise, rate, schedule, seed, variant, epochs, options)
        for schedule in schedules
        for seed in seeds
        for noise, rate in (("none", 0.0), ("symmetric", 0.4))
        for variant in ("full", "val10")
    ]


def _choices(rows: list[dict], horizon: int) -> dict[str, tuple[int, float]]:
    horizon = min(horizon, len(rows))
    rows = rows[:horizon]
    out = {}
    for name, epoch in policy.select_all(rows, total_epochs=horizon).items():
        out[name] = (epoch, float(rows[epoch - 1]["test_acc"]))
    return out


def analyse(out: Path, job_list: list[Job]) -> dict:
    table = {}
    for job in job_list:
        if job.variant != "full" or not is_complete(out / job.name):
            continue
        val = job.__class__(**{**job.__dict__, "variant": "val10"})
        if not is_complete(out / val.name):
            continue
        full_rows, val_rows = load_run(out / job.name).metrics, load_run(out / val.name).metrics
        entry = {}
        for horizon in (len(full_rows) // 10, len(full_rows)):
            picks = _choices(full_rows, horizon)
            picks["val"] = _choices(val_rows, horizon)["val"]
            entry[horizon] = picks
        table[job.name] = entry
    return table


def summary(table: dict) -> str:
    """Markdown: test accuracy (mean over seeds) at each criterion's choice, first 20 epochs vs all 200, per
    schedule and noise; and the paired difference to the val10 split of the same horizon."""
    import numpy as np

    groups: dict = {}
    for name, entry in table.items():
        key = tuple(name.split("_")[2:4])  # (noise, schedule)
        groups.setdefault(key, []).append(entry)
    lines = [
        "| setting (seeds) | horizon | " + " | ".join((*CRITERIA, "val")) + " |",
        "|" + "---|" * (len(CRITERIA) + 3),
    ]
    for (noise, schedule), entries in sorted(groups.items()):
        for horizon in sorted({int(h) for e in entries for h in e}):
            cells = []
            for c in (*CRITERIA, "val"):
                acc = [e[horizon][c][1] for e in entries if c in e[horizon]]
                d = [e[horizon][c][1] - e[horizon]["val"][1] for e in entries if c in e[horizon]]
                ep = [e[horizon][c][0] for e in entries if c in e[horizon]]
                cells.append(
                    f"{100 * np.mean(acc):.1f} ({100 * np.mean(d):+.1f}; ep {','.join(map(str, ep))})"
                )
            lines.append(
                f"| {noise}, {schedule} ({len(entries)}) | epochs 1-{horizon} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def plot(out: Path, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (noise, schedule) in zip(
        axes.flat, [("clean", "constant"), ("sym0.4", "constant"), ("clean", "cosine"), ("sym0.4", "cosine")]
    ):
        ax2 = ax.twinx()
        for seed in (0, 1, 2):
            run_dir = out / f"digits_cnn_{noise}_{schedule}_seed{seed}_full"
            if not is_complete(run_dir):
                continue
            rows = load_run(run_dir).metrics
            e = [r["epoch"] for r in rows]
            ax.plot(
                e,
                [r["gwa"] for r in rows],
                color=f"C{seed}",
                label=f"seed {seed}: gwa (mean / Pearson kurtosis)",
            )
            ax2.plot(e, [r["test_acc"] for r in rows], ":", color=f"C{seed}", alpha=0.7)
        for x in (2.5, 20.5):
            ax.axvline(x, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"digits CNN w16, {schedule} lr, {noise}, 200 epochs (2,000 steps)")
        ax.set_xlabel("epoch (log scale; lines: warm-up 2, end of the first 10% = 20)")
        ax2.set_ylabel("test accuracy (dotted)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--schedules", default="constant,cosine")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--analyse-only", action="store_true")
    p.add_argument("--plot", help="write the curves to this PNG")
    p.add_argument("--dataset", choices=tuple(MODELS), default="digits")
    args = p.parse_args()
    out = Path(args.out)
    job_list = jobs(args.schedules.split(","), [int(s) for s in args.seeds.split(",")], args.dataset)
    if not args.analyse_only:
        run_jobs(job_list, out, workers=1, threads=1)
    table = analyse(out, job_list)
    (out / f"run_length_{args.dataset}.json").write_text(json.dumps(table, indent=1) + "\n")
    for name, entry in table.items():
        for horizon, picks in entry.items():
            text = ", ".join(
                f"{k} {e} ({100 * a:.1f})" for k, (e, a) in picks.items() if k in (*CRITERIA, "val")
            )
            print(f"{name} first {horizon}: {text}")
    print(summary(table))
    if args.plot and args.dataset == "digits":
        plot(out, args.plot)


if __name__ == "__main__":
    main()
