"""Issue 12, item 7: does the maximum mean alignment rank models (the paper's third claim)? Measured.

Trains several architectures and widths on one dataset (clean labels), each with several seeds, once on all
training samples (``full``) and once with a 10% stratified split held out (``val10``). ``gwa compare`` (its API,
:func:`gwa.report.compare_runs`) reads the full runs; each architecture's statistic is the mean over its
seeds, and Kendall's tau between that ranking and the architectures' mean test accuracy comes with a bootstrap
interval that resamples each architecture's seeds (:func:`gwa.bench.ranking.kendall_tau_interval`). The baseline
ranks the architectures by their split's best accuracy (the val10 runs), against the same test accuracies.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/model_ranking.py --plan short \
        --out /work/evid_runs/ranking --json docs/data/experiments/model_ranking.json
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/model_ranking.py --plan long \
        --out /work/evid_runs/ranking_long --json docs/data/experiments/model_ranking.json
    (add --analyse-only to rebuild the tables from the run directories, --plot PNG for the scatter plots)
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine, when run as a script

import numpy as np

from gwa.bench.grid import is_complete
from gwa.bench.paired import RESAMPLES
from gwa.bench.ranking import kendall_tau_interval
from gwa.policy import warmup_epochs
from gwa.rundir import load_run

#: Architectures: name -> RunConfig fields. MLPs of three sizes and 1-D CNNs of four widths.
ARCHITECTURES: dict[str, dict] = {
    "mlp-32": {"model": "mlp", "hidden": (32,)},
    "mlp-128": {"model": "mlp", "hidden": (128,)},
    "mlp-256x256": {"model": "mlp", "hidden": (256, 256)},
    "cnn-w4": {"model": "cnn", "width": 4},
    "cnn-w8": {"model": "cnn", "width": 8},
    "cnn-w16": {"model": "cnn", "width": 16},
    "cnn-w32": {"model": "cnn", "width": 32},
}
#: (statistic, target) pairs whose tau over architectures is reported; the first is the headline.
PAIRS = (
    ("max_align", "test_last"),
    ("max_align_after_warmup", "test_last"),
    ("max_align", "test_best"),
    ("max_align", "test_at_align"),
    ("gwa", "test_at_gwa"),
    ("val_best", "test_last"),
    ("val_best", "test_best"),
)
LABELS = {
    "max_align": "max mean alignment (gwa compare)",
    "max_align_after_warmup": "max mean alignment after the warm-up (exploratory)",
    "gwa": "GWA at its chosen epoch (gwa compare)",
    "val_best": "best val10 accuracy (split baseline)",
    "test_last": "test acc, last epoch",
    "test_best": "best test acc over epochs",
    "test_at_align": "test acc at the max-alignment epoch",
    "test_at_gwa": "test acc at gwa's chosen epoch",
}


@dataclass(frozen=True)
class Plan:
    """The experiment's recipe; :data:`PLANS` are what docs/results.md reports, tests use a tiny one."""

    dataset: str = "mnist1d"
    data_options: tuple = (("mnist1d_samples", 5000),)
    architectures: tuple[str, ...] = tuple(ARCHITECTURES)
    epochs: int = 20
    seeds: tuple[int, ...] = (200, 201, 202, 203, 204)


#: 20 epochs (640 steps) and 40 epochs (1,280 steps) of the same recipe, seeds and architectures.
PLANS = {"short": Plan(), "long": Plan(epochs=40)}


def run_config(plan: Plan, arch: str, seed: int, variant: str, out: Path):
    from gwa.runner.config import RunConfig

    if arch not in ARCHITECTURES:
        raise ValueError(f"Expected an architecture of {list(ARCHITECTURES)}; got {arch!r}.")
    name = f"{plan.dataset}_{arch}_seed{seed}_{variant}"
    return RunConfig(
        dataset=plan.dataset,
        epochs=plan.epochs,
        seed=seed,
        val_frac=0.1 if variant == "val10" else 0.0,
        signals=(),
        out=str(out / name),
        name=name,
        overwrite=True,
        quiet=True,
        **dict(plan.data_options),
        **ARCHITECTURES[arch],
    )


def configs(plan: Plan, out: Path) -> list:
    """Seed-major (every architecture of seed 1, then seed 2, ...): a run stopped early has whole seeds."""
    return [
        run_config(plan, arch, seed, variant, out)
        for seed in plan.seeds
        for arch in plan.architectures
        for variant in ("full", "val10")
    ]


def train_all(plan: Plan, out: Path, log=print) -> float:
    import torch
    from gwa.runner.train import run_training

    torch.set_num_threads(1)
    seconds = 0.0
    for config in configs(plan, out):
        if is_complete(config.out_dir):
            continue
        t0 = time.perf_counter()
        run_training(config, progress=False)
        seconds += time.perf_counter() - t0
        log(f"{config.run_name}: {time.perf_counter() - t0:.1f}s")
    return seconds


def run_values(plan: Plan, out: Path) -> dict[str, dict[int, dict[str, float]]]:
    """``{arch: {seed: {statistic or target: value}}}`` for every seed whose full and val10 runs are complete;
    the alignment statistics come from ``gwa compare`` over all those full runs at once."""
    from gwa.report import compare_runs

    done = {
        (arch, seed): (run_config(plan, arch, seed, "full", out), run_config(plan, arch, seed, "val10", out))
        for arch in plan.architectures
        for seed in plan.seeds
    }
    done = {k: v for k, v in done.items() if is_complete(v[0].out_dir) and is_complete(v[1].out_dir)}
    if not done:
        return {}
    rows = {Path(r.path).resolve(): r for r in compare_runs([full.out_dir for full, _ in done.values()]).rows}
    values: dict[str, dict[int, dict[str, float]]] = {}
    for (arch, seed), (full, val) in done.items():
        row = rows[Path(full.out_dir).resolve()]
        full_rows = load_run(full.out_dir).metrics
        after = [
            r["align_mean"]
            for r in full_rows[warmup_epochs(plan.epochs) :]
            if r.get("align_mean") is not None
        ]
        val_acc = np.array([r.get("val_acc", math.nan) for r in load_run(val.out_dir).metrics], dtype=float)
        values.setdefault(arch, {})[seed] = {
            "max_align": row.max_align,
            "max_align_after_warmup": float(np.max(after)) if after else math.nan,
            "align_epoch": row.align_epoch,
            "gwa": row.gwa,
            "gwa_epoch": row.gwa_epoch,
            "val_best": float(np.nanmax(val_acc)),
            "test_last": float(full_rows[-1]["test_acc"]),
            "test_best": row.best_test,
            "test_at_align": row.test_at_align,
            "test_at_gwa": row.test_at_gwa,
        }
    return values


def analyse(plan: Plan, out: Path, *, resamples: int = RESAMPLES) -> dict:
    """Per architecture the seed means; per (statistic, target) pair tau over architectures with its interval;
    and what ``gwa compare`` itself prints over all full runs (tau over runs, scipy's p-value)."""
    from gwa.report import compare_runs

    values = run_values(plan, out)
    seeds = {arch: sorted(v) for arch, v in values.items()}
    n_seeds = min((len(s) for s in seeds.values()), default=0)
    means = {
        arch: {k: float(np.mean([v[s][k] for s in v])) for k in (*LABELS, "align_epoch", "gwa_epoch")}
        for arch, v in values.items()
    }
    taus = {}
    if len(values) >= 3:
        for stat, target in PAIRS:
            r = kendall_tau_interval(
                {a: [v[s][stat] for s in sorted(v)] for a, v in values.items()},
                {a: [v[s][target] for s in sorted(v)] for a, v in values.items()},
                resamples=resamples,
            )
            taus[f"{stat} vs {target}"] = dataclasses.asdict(r)
    full_dirs = [run_config(plan, a, s, "full", out).out_dir for a, v in values.items() for s in v]
    per_run = [dataclasses.asdict(c) for c in compare_runs(full_dirs).correlations] if full_dirs else []
    return {
        "plan": dataclasses.asdict(plan),
        "architectures": {a: ARCHITECTURES[a] for a in values},
        "seeds_per_architecture": n_seeds,
        "runs": {a: {str(s): x for s, x in v.items()} for a, v in values.items()},
        "means": means,
        "tau_over_architectures": taus,
        "gwa_compare_over_runs": per_run,
    }


def tables(result: dict) -> str:
    means = result["means"]
    order = sorted(means, key=lambda a: -means[a]["test_last"])
    header = "| architecture | test acc, last (%) | best test (%) | max mean alignment (epoch) | GWA at its epoch |"
    lines = [header + " best val10 acc (%) |", "|---|---:|---:|---:|---:|---:|"]
    for a in order:
        m = means[a]
        lines.append(
            f"| {a} | {100 * m['test_last']:.1f} | {100 * m['test_best']:.1f} | {m['max_align']:.4f} "
            f"({m['align_epoch']:.1f}) | {m['gwa']:.4f} | {100 * m['val_best']:.1f} |"
        )
    lines += ["", "| ranking by | against | Kendall tau over architectures [95% interval] | p (scipy) |"]
    lines.append("|---|---|---:|---:|")
    for key, t in result["tau_over_architectures"].items():
        stat, target = key.split(" vs ")
        interval = f"{t['tau']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]"
        lines.append(f"| {LABELS[stat]} | {LABELS[target]} | {interval} | {t['pvalue']:.2g} |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, (arch, by_seed) in enumerate(result["runs"].items()):
        runs = list(by_seed.values())
        for ax, stat in zip(axes, ("max_align", "val_best")):
            ax.scatter(
                [r[stat] for r in runs],
                [100 * r["test_last"] for r in runs],
                color=f"C{k % 10}",
                marker="o" if arch.startswith("mlp") else "s",
                label=arch,
                s=18,
            )
    axes[0].set_xlabel("max mean alignment (gwa compare)")
    axes[1].set_xlabel("best val10 accuracy (split run)")
    for ax in axes:
        ax.set_ylabel("test accuracy at the last epoch (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle("one point per run (architecture x seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from _plans import run_plans

    return run_plans(
        __doc__,
        PLANS,
        default="short",
        json_name="model_ranking.json",
        plot_help="the scatter plots",
        train_all=train_all,
        analyse=analyse,
        render=lambda name, plan, result: f"plan {name} ({plan.epochs} epochs):\n\n{tables(result)}",
        plot=lambda plan, out, result, png: plot(result, png),
        argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
