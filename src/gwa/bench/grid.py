"""``gwa bench``: train a grid of runs and tabulate every stop criterion and mislabel score over them.

For each setting (dataset x model x label noise x schedule x seed) the grid trains three runs, all with the same
seed (same subset, same noisy labels, same initialisation):

- ``full``: all training samples; GWA, mean alignment, LabelWave, Gradient Disparity, last epoch and oracle choose
  epochs in it, and the mislabel scores are measured on it;
- ``val10`` / ``val1``: 10% / 1% of the training samples held out (stratified, with the same label noise), i.e. a
  separate training on 90% / 99% as in the paper's validation baseline; the held-out split picks the epoch by its
  noisy labels (``val``, what a user has) or its clean labels (``val_clean``, the paper's setting).

Each run is a plain run directory (:mod:`gwa.rundir`) under ``--out``; finished runs are skipped when the bench is
started again, and ``--from-runs DIR`` rebuilds the tables from the run directories alone, without training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Held-out fraction of each run variant.
VARIANTS = {"full": 0.0, "val10": 0.1, "val1": 0.01}
#: Label-noise settings: (kind, rate).
NOISE_SETTINGS = (("none", 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("asymmetric", 0.4))
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
GRIDS = ("reduced", "full", "case", "heldout", "heldout2")
#: The held-out grid's label noise and seeds (docs/protocol.md): different seeds from the development grid's 0-2.
HELDOUT_NOISE = (
    ("none", 0.0),
    ("symmetric", 0.2),
    ("symmetric", 0.4),
    ("asymmetric", 0.2),
    ("asymmetric", 0.4),
)
HELDOUT_SEEDS = (100, 101, 102, 103, 104)
HELDOUT2_SEEDS = (105, 106, 107, 108, 109)  # the second held-out grid H' (docs/protocol.md section 7)
#: The flag rule whose precision/recall the detection table reports.
FLAG_LAST_K = 3


@dataclass(frozen=True)
class Job:
    """One training run of the grid."""

    dataset: str
    model: str
    noise: str
    noise_rate: float
    schedule: str
    seed: int
    variant: str
    epochs: int
    options: tuple = ()  # extra RunConfig fields as sorted (key, value) pairs

    @property
    def name(self) -> str:
        noise = "clean" if self.noise == "none" else f"{self.noise[:3]}{self.noise_rate:g}"
        return f"{self.dataset}_{self.model}_{noise}_{self.schedule}_seed{self.seed}_{self.variant}"

    def config(self, out: Path):
        from gwa.runner.config import RunConfig

        full = self.variant == "full"
        options = {
            "dataset": self.dataset,
            "model": self.model,
            "noise": self.noise,
            "noise_rate": self.noise_rate,
            "schedule": self.schedule,
            "seed": self.seed,
            "epochs": self.epochs,
            "val_frac": VARIANTS[self.variant],
            "gradient_disparity": full,
            "out": str(out / self.name),
            "name": self.name,
            "overwrite": True,
            "quiet": True,
            **dict(self.options),
        }
        if not full:  # validation-split runs only choose epochs: no per-sample signals besides alignment
            options["signals"] = ()
        return RunConfig(**options)


@dataclass(frozen=True)
class DatasetPlan:
    dataset: str
    models: tuple[str, ...]
    epochs: int
    options: dict = field(default_factory=dict)  # RunConfig fields for the data
    model_options: dict = field(default_factory=dict)  # model -> RunConfig fields


def grid_plans(
    grid: str, *, cuda: bool
) -> tuple[list[DatasetPlan], tuple, tuple[str, ...], tuple[int, ...], tuple]:
    """``(plans, noise settings, schedules, seeds, variants)`` of a named grid."""
    from gwa.runner.data import default_fashion_mnist_dir

    small = {"mlp": {"hidden": (256, 256)}, "cnn": {"width": 16}}
    if grid == "reduced":  # keeps the code path alive in the test suite: seconds, not a measurement
        plans = [DatasetPlan("digits", ("mlp",), 5, {}, {"mlp": {"hidden": (32,)}})]
        return plans, (("none", 0.0), ("symmetric", 0.4)), ("cosine",), (0,), tuple(VARIANTS)
    if grid == "case":  # the Fashion-MNIST failure case: MLP 784-512-512-10, Adam 1e-3 constant, 10k
        plans = [
            DatasetPlan("fashion-mnist", ("mlp",), 30, {"num_train": 10000}, {"mlp": {"hidden": (512, 512)}})
        ]
        return plans, (("none", 0.0), ("symmetric", 0.4)), ("constant",), (0, 1, 2), tuple(VARIANTS)
    if grid in ("heldout", "heldout2"):  # issue 12's pre-registered held-out grids (docs/protocol.md)
        plans = [
            DatasetPlan("mnist1d", ("cnn",), 30, {"mnist1d_samples": 5000}, {"cnn": {"width": 32}}),
            DatasetPlan("fashion-mnist", ("mlp", "cnn"), 20, {"num_train": 3000}, small),
        ]
        seeds = HELDOUT_SEEDS if grid == "heldout" else HELDOUT2_SEEDS
        return plans, HELDOUT_NOISE, ("constant",), seeds, ("full", "val10")
    if grid != "full":
        raise ValueError(f"Expected `grid` to be one of {', '.join(GRIDS)}; got {grid!r}.")
    # Sized for a 2-core CPU (about 40 minutes with two workers): small subsets, small models, 20 epochs.
    plans = [
        DatasetPlan("digits", ("mlp", "cnn"), 20, {}, small),
        DatasetPlan("mnist1d", ("mlp",), 20, {"mnist1d_samples": 5000}, small),
    ]
    if default_fashion_mnist_dir() is not None:
        plans.append(DatasetPlan("fashion-mnist", ("mlp",), 20, {"num_train": 4000}, small))
    if cuda and _cifar10_present():
        plans.append(DatasetPlan("cifar10", ("cnn",), 30, {"num_train": 20000}, {"cnn": {"width": 32}}))
    return plans, NOISE_SETTINGS, ("cosine", "constant"), (0, 1, 2), tuple(VARIANTS)


def _cifar10_present() -> bool:
    try:
        from gwa.runner.data import load_cifar10

        load_cifar10()
        return True
    except (FileNotFoundError, ValueError, OSError):
        return False


def make_jobs(grid: str, *, cuda: bool = False, seeds: int | None = None) -> list[Job]:
    """The grid's runs: schedule outermost, then dataset (cheapest first), seed, noise, variant, so that a grid
    stopped early still has whole settings of one schedule."""
    plans, noises, schedules, seed_list, variants = grid_plans(grid, cuda=cuda)
    if seeds is not None:
        seed_list = tuple(seed_list[0] + i for i in range(seeds))
    jobs = []
    for schedule in schedules:
        for plan in plans:
            for model in plan.models:
                options = {**plan.options, **plan.model_options.get(model, {})}
                for seed in seed_list:
                    for noise, rate in noises:
                        for variant in variants:
                            jobs.append(
                                Job(
                                    plan.dataset,
                                    model,
                                    noise,
                                    rate,
                                    schedule,
                                    seed,
                                    variant,
                                    plan.epochs,
                                    tuple(sorted(options.items())),
                                )
                            )
    return jobs


# ---------------------------------------------------------------------------------------------- running


def _worker_init(threads: int) -> None:
    import torch
    from gwa.runner import data

    torch.set_num_threads(threads)
    # Every run of a dataset loads (or generates) the same arrays; load them once per worker process.
    if not hasattr(data.load_dataset, "cache_info"):
        import functools

        data.load_dataset = functools.lru_cache(maxsize=4)(data.load_dataset)


def _run_job(job: Job, out: str) -> tuple[str, float, str | None]:
    from gwa.runner.train import run_training

    t0 = time.perf_counter()
    try:
        run_training(job.config(Path(out)), progress=False)
        return job.name, time.perf_counter() - t0, None
    except Exception as exc:
        return job.name, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


def is_complete(path: Path) -> bool:
    try:
        return (
            json.loads((path / "config.json").read_text()).get("status") == "complete"
            and (path / "summary.json").exists()
        )
    except (OSError, json.JSONDecodeError):
        return False


def run_jobs(jobs: list[Job], out: Path, *, workers: int = 1, threads: int = 1, log=print) -> list[str]:
    """Train every job whose run directory is not complete yet; returns the error lines."""
    todo = [j for j in jobs if not is_complete(out / j.name)]
    log(
        f"{len(jobs) - len(todo)} of {len(jobs)} runs already complete; training {len(todo)} "
        f"with {workers} worker(s)"
    )
    errors = []
    done = 0

    def report(name, seconds, error):
        nonlocal done
        done += 1
        log(f"[{done}/{len(todo)}] {name} {seconds:.1f}s" + (f" FAILED {error}" if error else ""))
        if error:
            errors.append(f"{name}: {error}")

    if workers <= 1:
        import torch
        from gwa.runner import data

        # In this process: the same thread limit and dataset cache as a worker, undone afterwards.
        saved_threads, saved_loader = torch.get_num_threads(), data.load_dataset
        _worker_init(threads)
        try:
            for job in todo:
                report(*_run_job(job, str(out)))
        finally:
            torch.set_num_threads(saved_threads)
            data.load_dataset = saved_loader
        return errors
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(_run_job, job, str(out)) for job in todo]
        for f in as_completed(futures):
            report(*f.result())
    return errors


# ---------------------------------------------------------------------------------------------- collecting


@dataclass
class RunResult:
    """What the tables need from one finished run directory."""

    path: Path
    setting: tuple  # (dataset, model, noise, noise_rate, schedule)
    seed: int
    variant: str
    epochs: int
    wall_time: float
    test_at: dict[str, float]  # criterion -> test accuracy at its chosen epoch
    chosen: dict[str, int]  # criterion -> epoch
    detection: dict[str, tuple[float, float]] = field(default_factory=dict)  # score -> (AUROC, AUPRC)
    flag: tuple[float | None, float | None] | None = None  # (precision, recall)
    noise_fraction: float = 0.0
    #: method -> {"precision", "recall", "f1", "auroc", "sample_passes"}: gwa's flag rules and, when its result
    #: file exists, cleanlab (noisy full runs only)
    flags: dict[str, dict[str, float]] = field(default_factory=dict)
    noise_estimate: float | None = None  # gwa.policy.estimate_noise_rate
    #: estimator -> estimated noise rate, every full run with alignment scores (clean ones too): the default
    #: ``negative_share`` and the candidates of :data:`gwa.bench.candidates.NOISE_RATE_CANDIDATES` (``cand:``)
    noise_estimates: dict[str, float] = field(default_factory=dict)


def _variant(val_frac: float) -> str | None:
    for name, frac in VARIANTS.items():
        if math.isclose(float(val_frac or 0.0), frac):
            return name
    return None


def load_result(path: Path) -> RunResult | None:
    """Read one complete run directory; None if it is not a bench run (unknown held-out fraction)."""
    from gwa import policy
    from gwa.baselines import detection
    from gwa.rundir import load_run

    run = load_run(path)
    c = run.config
    variant = _variant(c.get("val_frac", 0.0))
    if variant is None or not run.metrics:
        return None
    rows = run.metrics
    chosen = policy.select_all(
        rows, finetune=bool(c.get("finetune")), total_epochs=int(c.get("epochs") or len(rows))
    )
    chosen.update(candidate_choices(rows))
    if variant == "full" and "alignment" in run.signals():
        chosen.update(score_candidate_choices(run))
    test = policy.series(rows, "test_acc")
    index = {int(r["epoch"]): i for i, r in enumerate(rows)}
    test_at = {k: float(test[index[e]]) for k, e in chosen.items()}
    result = RunResult(
        path=path,
        setting=(c["dataset"], c["model"], c["noise"], float(c["noise_rate"]), c["schedule"]),
        seed=int(c["seed"]),
        variant=variant,
        epochs=len(rows),
        wall_time=float(rows[-1].get("wall_time") or 0.0),
        test_at=test_at,
        chosen=chosen,
    )
    mask = run.noise_mask
    if variant == "full" and "alignment" in run.signals():
        result.noise_estimates = noise_rate_estimates(run)
        if mask is not None:
            result.noise_fraction = float(mask.mean())
    if variant == "full" and mask is not None and mask.any() and not mask.all():
        scores = detection.run_scores(run, epoch=chosen.get(policy.DEFAULT_CRITERION))
        result.detection = {name: detection.ranking_quality(s, mask) for name, s in scores.items()}
        from gwa.report.flag import flag_samples

        flagged = flag_samples(run, rule="lastk", last_k=FLAG_LAST_K)
        result.flag = (flagged.precision, flagged.recall)
        result.flags = flag_comparison(run, path.parent, path.name)
        result.noise_estimate = policy.estimate_noise_rate(run.score_matrix("alignment")).rate
    return result


#: gwa's flag rules in the flag table, the default first.
FLAG_METHODS = ("window", "lastk", "mean", "frac")


def flag_comparison(run, root: Path, name: str) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and AUROC of gwa's flag rules (one training run) and of cleanlab (K folds, when
    ``root/cleanlab/<name>.npz`` exists) against the run's noise mask; ``sample_passes`` = epochs x samples."""
    from sklearn.metrics import roc_auc_score

    from gwa.bench import cleanlab_baseline
    from gwa.bench.candidates import FLAG_CANDIDATES
    from gwa.report.flag import flag_samples

    mask = run.noise_mask.astype(bool)
    passes = float(len(run.epochs) * mask.size)
    out = {}
    for rule in FLAG_METHODS:
        f = flag_samples(run, rule=rule, last_k=FLAG_LAST_K)
        flagged = np.zeros(mask.size, dtype=bool)
        flagged[f.sample_ids[f.flagged]] = True
        out[rule] = {
            **cleanlab_baseline.flag_quality(flagged, mask),
            "auroc": float(f.auroc or float("nan")),
            "sample_passes": passes,
        }
    matrix = run.score_matrix("alignment")
    for cand, flag_rule in FLAG_CANDIDATES.items():
        try:
            score, flagged = flag_rule(run.metrics, matrix)
        except ValueError:
            continue
        seen = np.isfinite(score)
        out[f"cand:{cand}"] = {
            **cleanlab_baseline.flag_quality(flagged, mask),
            "auroc": float(roc_auc_score(mask[seen], -score[seen])),
            "sample_passes": passes,
        }
    cl = cleanlab_baseline.load_result(root, name)
    if cl is not None:
        out["cleanlab"] = {
            **cleanlab_baseline.flag_quality(cl["flagged"], mask),
            "auroc": float(roc_auc_score(mask, -cl["quality"])),
            "sample_passes": float(cl["sample_passes"]),
        }
    return out


def noise_rate_estimates(run) -> dict[str, float]:
    """``{estimator: rate}`` of one run: gwa's default and every noise-rate candidate (prefixed ``cand:``)."""
    from gwa import policy
    from gwa.bench.candidates import NOISE_RATE_CANDIDATES

    matrix = run.score_matrix("alignment")
    out = {"negative_share": policy.estimate_noise_rate(matrix).rate}
    for name, estimate in NOISE_RATE_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = estimate(run.metrics, matrix)
        except ValueError:
            continue
    return out


def candidate_choices(rows: list[dict]) -> dict[str, int]:
    """Epochs picked by the research candidates of :mod:`gwa.bench.candidates` (prefixed ``cand:``)."""
    from gwa.bench.candidates import CANDIDATES

    out = {}
    epochs = [int(r["epoch"]) for r in rows]
    for name, choose in CANDIDATES.items():
        try:
            out[f"cand:{name}"] = epochs[choose(rows)]
        except (ValueError, KeyError):
            continue
    return out


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
        "cleanlab": "cleanlab find_label_issues, 5-fold out-of-sample probabilities (5 runs)",
    }
    header = ["method", "runs", "precision", "recall", "F1", "AUROC", "training sample-passes (relative)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in (*FLAG_METHODS, "cleanlab"):
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


def _median_curve(matrix: np.ndarray) -> np.ndarray:
    out = np.full(matrix.shape[0], np.nan)
    for e, row in enumerate(matrix):
        seen = row[np.isfinite(row)]
        if seen.size:
            out[e] = float(np.median(seen))
    return out


#: Research candidates that need the per-sample scores (not only the metric rows): name -> (E, N) -> (E,) curve,
#: chosen with the paper's rule. The median is the location of the majority mode when fewer than half the
#: samples sit in the negatively aligned (mislabeled) mode.
def _positive_mean_curve(matrix: np.ndarray) -> np.ndarray:
    """Mean alignment of the positively aligned samples: the mean without the negatively aligned mode."""
    out = np.full(matrix.shape[0], np.nan)
    for e, row in enumerate(matrix):
        pos = row[np.isfinite(row) & (row > 0)]
        if pos.size:
            out[e] = float(pos.mean())
    return out


SCORE_CANDIDATES = {"align_median": _median_curve, "align_positive_mean": _positive_mean_curve}


def score_candidate_choices(run) -> dict[str, int]:
    from gwa.bench.candidates import SCORE_ROW_CANDIDATES
    from gwa.policy import choose, warmup_epochs

    matrix = run.score_matrix("alignment")
    out = {}
    for name, curve in SCORE_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = run.epochs[choose(curve(matrix), warmup=warmup_epochs(len(run.epochs)))]
        except ValueError:
            continue
    for name, pick in SCORE_ROW_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = run.epochs[pick(run.metrics, matrix)]
        except (ValueError, KeyError):
            continue
    return out


def collect(root: Path, log=print) -> list[RunResult]:
    results = []
    for cfg in sorted(Path(root).rglob("config.json")):
        path = cfg.parent
        if not is_complete(path):
            log(f"skipping incomplete run {path}")
            continue
        r = load_result(path)
        if r is not None:
            results.append(r)
    return results


# ---------------------------------------------------------------------------------------------- tables


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
        diff_cells = {label: [] for label, _, _ in rows}
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
        diffs, regrets, noisy, clean = [], [], [], []
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
    pre = [cell([r.flag[0] for r in groups[k] if r.flag and r.flag[0] is not None]) for k in keys]
    rec = [cell([r.flag[1] for r in groups[k] if r.flag and r.flag[1] is not None]) for k in keys]
    lines.append(
        f"| precision: alignment < 0 in each of the last {FLAG_LAST_K} epochs | " + " | ".join(pre) + " |"
    )
    lines.append(
        f"| recall: alignment < 0 in each of the last {FLAG_LAST_K} epochs | " + " | ".join(rec) + " |"
    )
    frac = [cell([r.noise_fraction for r in groups[k]]) for k in keys]
    lines.append("| fraction of mislabeled samples | " + " | ".join(frac) + " |")
    counts = [str(len(groups[k])) for k in keys]
    lines.append("| runs pooled (models x schedules x seeds) | " + " | ".join(counts) + " |")
    return "\n".join(lines)


#: Settings up to this count get per-epoch curves in the report (the failure-case grid).
MAX_CURVE_SETTINGS = 4


def curve_tables(results: list[RunResult]) -> str:
    """Per-epoch statistics of the first seed's full run of each setting: where the paper's ratio has its pole."""
    from gwa.rundir import load_run

    firsts = {}
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
        median = _median_curve(a)
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
            mean = row.get("align_mean")
            gwa_text = "∞" if row.get("gwa_paper") is None else f"{row['gwa_paper']:.3f}"
            noisy = f"{np.mean(g[seen & mask]):.4f}" if (seen & mask).any() else "–"
            pearson = "–" if row.get("gwa") is None else f"{row['gwa']:.4f}"
            lines.append(
                f"| {row['epoch']} | {100 * row['test_acc']:.1f} | {mean:.4f} | {median[i]:.4f} | "
                f"{kurt:.2f} | {kurt + 1.2:.2f} | {gwa_text} | {'yes' if row.get('gwa_paper_flagged') else ''} | "
                f"{pearson} | {np.mean(g[seen] < 0):.3f} | {np.mean(g[seen & ~mask]):.4f} | {noisy} |"
            )
        picks = ", ".join(f"{k.removeprefix('cand:')} → {e}" for k, e in r.chosen.items())
        lines += ["", f"Chosen epochs: {picks}.", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def machine_description() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


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


# ---------------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid",
        choices=GRIDS,
        default="reduced",
        help="reduced: seconds, keeps the code path alive; full: the development grid of "
        "docs/benchmarks.md; case: the Fashion-MNIST 40%% failure case of the issue; heldout, heldout2: "
        "the pre-registered held-out grids H and H' of docs/protocol.md (default reduced)",
    )
    parser.add_argument(
        "--out", default="runs/bench", help="folder for the run directories (default runs/bench)"
    )
    parser.add_argument(
        "--from-runs", metavar="DIR", help="only rebuild the tables from the run directories in DIR"
    )
    parser.add_argument(
        "--report", metavar="MD", help="write the markdown tables here (default OUT/bench.md)"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel training processes (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--seeds", type=int, help="number of seeds (default: the grid's)")
    parser.add_argument(
        "--cleanlab",
        action="store_true",
        help="also run the cleanlab baseline (5-fold cross-validated trainings of each noisy full "
        "run's recipe; needs `pip install cleanlab`) and tabulate it beside gwa's flag rules",
    )


def run_cleanlab_all(root: Path, log=print) -> None:
    """cleanlab for every complete noisy full run under ``root`` that has no result yet (resumable)."""
    from gwa.bench import cleanlab_baseline
    from gwa.runner.config import RunConfig

    for cfg in sorted(Path(root).glob("*/config.json")):
        c = json.loads(cfg.read_text())
        if (
            c.get("noise", "none") == "none"
            or _variant(c.get("val_frac", 0.0)) != "full"
            or not is_complete(cfg.parent)
            or cleanlab_baseline.result_path(root, cfg.parent.name).exists()
        ):
            continue
        t0 = time.perf_counter()
        config = RunConfig.from_dict({**c, "quiet": True})
        cleanlab_baseline.run_cleanlab(config, root)
        log(f"cleanlab {cfg.parent.name} {time.perf_counter() - t0:.1f}s")


def run(args: argparse.Namespace) -> int:
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"Expected `--{name}` >= 1; got {getattr(args, name)}.")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"Expected `--seeds` >= 1; got {args.seeds}.")
    command = (
        "gwa bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "gwa bench (called from Python)"
    )
    if args.from_runs:
        root = Path(args.from_runs)
        if not root.is_dir():
            raise FileNotFoundError(f"--from-runs {root} is not a directory.")
        meta_path = root / "bench.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        import torch

        root = Path(args.out)
        root.mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(args.grid, cuda=torch.cuda.is_available(), seeds=args.seeds)
        t0 = time.perf_counter()
        errors = run_jobs(
            jobs,
            root,
            workers=args.workers,
            threads=args.threads,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        meta = {
            "command": command,
            "grid": args.grid,
            "workers": args.workers,
            "threads": args.threads,
            "elapsed_s": time.perf_counter() - t0,
            "machine": machine_description(),
            "errors": errors,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        (root / "bench.json").write_text(json.dumps(meta, indent=2) + "\n")
        if errors:
            print(f"{len(errors)} run(s) failed:\n  " + "\n  ".join(errors), file=sys.stderr)
    if args.cleanlab:
        run_cleanlab_all(root, log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = {**meta, "aggregate_command": f"gwa bench --from-runs {shlex.quote(str(root))}"}
    results = collect(root, log=lambda m: print(m, file=sys.stderr))
    if not results:
        raise ValueError(f"No complete bench run directories under {root}.")
    text = render(results, meta)
    out = Path(args.report) if args.report else root / "bench.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"tables written to {out}", file=sys.stderr)
    return 1 if (not args.from_runs and meta.get("errors")) else 0
