"""Cost of grid H″ on this machine: one timed epoch of each model family's full run, extrapolated to the grid.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python experiments/heldout_cost.py OUT > cost.md

Each family's full-variant configuration of ``gwa bench --grid heldout3`` (tracker, companion signals, Gradient
Disparity, test evaluation) is trained for two epochs on a subset of ``--steps`` batches; the second epoch's time,
scaled to the family's batches per epoch and epochs, estimates one full run. Split runs (val10, val2) are costed
like full runs without Gradient Disparity's extra passes (an upper bound), cleanlab as 5 folds of 4/5 of a full
run for every noisy full run. One torch thread per run; workers in parallel divide the wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

from gwa.bench.command import machine_description
from gwa.bench.grid import make_jobs


def timed_epoch(job, out: Path, steps: int) -> tuple[float, float, float, int]:
    """``(training seconds per batch, other seconds per epoch, preparation seconds, batches per epoch of the real
    run)`` from two epochs of ``job`` cut to ``steps`` batches. Training = the second epoch's steps (the run's
    ``wall_time``); preparation = loading the data, subset, noise and splits (once per run); the rest of the
    elapsed time (evaluation, Gradient Disparity, checkpoints) is charged to each epoch."""
    from gwa.rundir import load_run
    from gwa.runner.data import prepare
    from gwa.runner.train import run_training

    config = job.config(out)
    n_real = prepare(config).num_samples
    batches = math.ceil(n_real / config.batch_size)
    # two epochs (the warm-up cut to one: the learning rate does not change the time of a step)
    small = config.replace(epochs=2, warmup_epochs=min(config.warmup_epochs, 1), out=str(out / job.name))
    if job.dataset == "mnist1d":  # the whole generated set: 32 batches
        steps = batches
    else:
        small = small.replace(num_train=steps * config.batch_size)
    t0 = time.perf_counter()
    prepare(
        config
    )  # the real run's preparation (its full subset; instance noise would add its reference model)
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare(small)
    small_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_training(small, progress=False)
    elapsed = time.perf_counter() - t0
    wall = [float(r["wall_time"]) for r in load_run(out / job.name).metrics]
    return (wall[1] - wall[0]) / steps, max(0.0, elapsed - small_prep - wall[1]) / 2, prep, batches


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=40, help="batches of the timed epochs (default 40)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    jobs = make_jobs("heldout3")
    families = Counter((j.dataset, j.model) for j in jobs)
    noisy_full = Counter((j.dataset, j.model) for j in jobs if j.variant == "full" and j.noise != "none")
    total = 0.0
    lines = [
        f"Machine: {machine_description()}; one thread per run; load average {os.getloadavg()[0]:.1f}.",
        "",
        "| family | epochs | batches/epoch | steps/run | s/step | other s/epoch | one run (min) | runs | cleanlab | CPU-hours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, n_runs in families.items():
        job = next(
            j for j in jobs if (j.dataset, j.model) == family and j.variant == "full" and j.noise == "none"
        )
        per_batch, other, prep, batches = timed_epoch(job, Path(args.out), args.steps)
        per_epoch = per_batch * batches + other
        run_s = prep + per_epoch * job.epochs
        cleanlab_s = noisy_full[family] * 5 * 0.8 * run_s
        hours = (n_runs * run_s + cleanlab_s) / 3600
        total += hours
        lines.append(
            f"| {family[0]} {family[1]} | {job.epochs} | {batches} | {batches * job.epochs} | {per_batch:.3f} | "
            f"{other:.1f} | "
            f"{run_s / 60:.1f} | {n_runs} | {noisy_full[family]} x 5 folds | {hours:.1f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"Total: {total:.0f} CPU-hours (one thread each)."]
    print("\n".join(lines))
    (Path(args.out) / "cost.json").write_text(json.dumps({"cpu_hours": total}) + "\n")


if __name__ == "__main__":
    main()
