"""Issue 12, item 2(b): the failing digits CNN at 10x the optimizer steps (200 epochs = 2,000 steps).

Trains (resumably, one process) the bench's digits CNN (width 16, Adam 1e-3, batch 128) for 200 epochs, clean and
40% symmetric noise, full and val10 variants, then applies every criterion of :mod:`gwa.policy` twice to the same
runs: to the first 10% (epochs 1-20, warm-up 2 epochs, i.e. the dev grid's run length) and to the whole run
(warm-up 20 epochs). With a constant learning rate the first 20 epochs are bit-identical to a 20-epoch run (the
batch order depends on (seed, epoch) only); with cosine they are not (the schedule is stretched).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python benchmarks/run_length.py --out /work/evid_runs/run_length \
        --schedules constant --seeds 0,1,2
    PYTHONPATH=src python benchmarks/run_length.py --out /work/evid_runs/run_length --analyse-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gwa import policy
from gwa.bench.grid import Job, is_complete, run_jobs
from gwa.rundir import load_run

EPOCHS = 200
SHORT = 20
CRITERIA = ("gwa", "gwa_paper", "align_mean", "labelwave", "grad_disparity", "last", "oracle")


def jobs(schedules, seeds) -> list[Job]:
    return [Job("digits", "cnn", noise, rate, schedule, seed, variant, EPOCHS, (("width", 16),))
            for schedule in schedules for seed in seeds for noise, rate in (("none", 0.0), ("symmetric", 0.4))
            for variant in ("full", "val10")]


def _choices(rows: list[dict], horizon: int) -> dict[str, tuple[int, float]]:
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
        for horizon in (SHORT, EPOCHS):
            picks = _choices(full_rows, horizon)
            picks["val"] = _choices(val_rows, horizon)["val"]
            entry[horizon] = picks
        table[job.name] = entry
    return table


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--schedules", default="constant,cosine")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--analyse-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    job_list = jobs(args.schedules.split(","), [int(s) for s in args.seeds.split(",")])
    if not args.analyse_only:
        run_jobs(job_list, out, workers=1, threads=1)
    table = analyse(out, job_list)
    (out / "run_length.json").write_text(json.dumps(table, indent=1) + "\n")
    for name, entry in table.items():
        for horizon, picks in entry.items():
            text = ", ".join(f"{k} {e} ({100 * a:.1f})" for k, (e, a) in picks.items() if k in (*CRITERIA, "val"))
            print(f"{name} first {horizon}: {text}")


if __name__ == "__main__":
    main()
