"""The benchmark grid of ``gwa bench``: which runs it trains, and training them.

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

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Held-out fraction of each run variant.
VARIANTS = {"full": 0.0, "val10": 0.1, "val2": 0.02, "val1": 0.01}
#: The variants of the development grids (the 2% split belongs to H″ only).
DEV_VARIANTS = ("full", "val10", "val1")
#: Label-noise settings: (kind, rate).
NOISE_SETTINGS = (("none", 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("asymmetric", 0.4))
GRIDS = ("reduced", "full", "case", "heldout", "heldout2", "heldout3")
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
#: The third held-out grid H″ (docs/protocol.md, "Grid H″"): new seeds, ten per setting.
HELDOUT3_SEEDS = tuple(range(110, 120))
HELDOUT3_NOISE = (*HELDOUT_NOISE, ("instance", 0.2), ("instance", 0.4))
#: H″'s paper-regime family: a small ResNet on Fashion-MNIST, SGD with momentum and weight decay, a cosine
#: schedule after a linear warm-up, shifted and flipped batches; 20,000 samples x 32 epochs at batch 64 = 10,016
#: steps, over 10x the longest H run (MNIST-1D CNN: 4,000 samples x 30 epochs at 128 = 960 steps).
PAPER_REGIME = {
    "num_train": 20000,
    "width": 16,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "warmup_cosine",
    "warmup_epochs": 2,
    "augment": True,
}
PAPER_REGIME_EPOCHS = 32


def variant_of(val_frac: float) -> str | None:
    """The variant a run's held-out fraction belongs to; None for a fraction no variant has."""
    for name, frac in VARIANTS.items():
        if math.isclose(float(val_frac or 0.0), frac):
            return name
    return None


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
        return plans, (("none", 0.0), ("symmetric", 0.4)), ("cosine",), (0,), DEV_VARIANTS
    if grid == "case":  # the Fashion-MNIST failure case: MLP 784-512-512-10, Adam 1e-3 constant, 10k
        plans = [
            DatasetPlan("fashion-mnist", ("mlp",), 30, {"num_train": 10000}, {"mlp": {"hidden": (512, 512)}})
        ]
        return plans, (("none", 0.0), ("symmetric", 0.4)), ("constant",), (0, 1, 2), DEV_VARIANTS
    if grid in ("heldout", "heldout2"):  # issue 12's pre-registered held-out grids (docs/protocol.md)
        plans = [
            DatasetPlan("mnist1d", ("cnn",), 30, {"mnist1d_samples": 5000}, {"cnn": {"width": 32}}),
            DatasetPlan("fashion-mnist", ("mlp", "cnn"), 20, {"num_train": 3000}, small),
        ]
        seeds = HELDOUT_SEEDS if grid == "heldout" else HELDOUT2_SEEDS
        return plans, HELDOUT_NOISE, ("constant",), seeds, ("full", "val10")
    if grid == "heldout3":  # issue 19's H″: H's two families plus one in the paper's regime, new seeds
        paper = {k: v for k, v in PAPER_REGIME.items() if k != "num_train"}
        plans = [
            DatasetPlan("mnist1d", ("cnn",), 30, {"mnist1d_samples": 5000}, {"cnn": {"width": 32}}),
            DatasetPlan("fashion-mnist", ("mlp", "cnn"), 20, {"num_train": 3000}, small),
            DatasetPlan(
                "fashion-mnist",
                ("resnet",),
                PAPER_REGIME_EPOCHS,
                {"num_train": PAPER_REGIME["num_train"]},
                {"resnet": paper},
            ),
        ]
        return plans, HELDOUT3_NOISE, ("constant",), HELDOUT3_SEEDS, ("full", "val10", "val2")
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
    return plans, NOISE_SETTINGS, ("cosine", "constant"), (0, 1, 2), DEV_VARIANTS


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
                run_schedule = options.pop("schedule", schedule)  # a family with its own schedule
                for seed in seed_list:
                    for noise, rate in noises:
                        for variant in variants:
                            jobs.append(
                                Job(
                                    plan.dataset,
                                    model,
                                    noise,
                                    rate,
                                    run_schedule,
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
