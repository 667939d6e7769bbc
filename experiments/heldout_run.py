"""Train a held-out grid of docs/protocol.md in its pre-registered order, resumably, in one process.

Order: per block (dataset x model family, cheapest first) its runs, then the cleanlab folds of its noisy full runs
(H and H': H1, H2, cleanlab H1, cleanlab H2, H3, cleanlab H3, as registered). A finished run or cleanlab result is
skipped when started again.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python experiments/heldout_run.py /work/evid_runs/heldout
    PYTHONPATH=src python experiments/heldout_run.py OUT --grid heldout3 --only fashion-mnist:mlp --perturb

``--perturb`` retrains as on another machine (the re-execution check of grid H″): two torch threads instead of one
and the initial weights multiplied by 1 + 1e-6 N(0, 1); write it to another folder and compare the two per-run
files with ``experiments/heldout_analysis.py --per-run A --rerun B``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from gwa.bench import cleanlab_baseline
from gwa.bench.grid import is_complete, make_jobs, run_jobs
from gwa.runner.config import RunConfig

#: H and H' blocks, in their registered order (H1 MNIST-1D CNN, H2 FMNIST MLP, H3 FMNIST CNN).
BLOCKS = (("mnist1d", "cnn"), ("fashion-mnist", "mlp"), ("fashion-mnist", "cnn"))
ORDER = (("train", 0), ("train", 1), ("cleanlab", 0), ("cleanlab", 1), ("train", 2), ("cleanlab", 2))
#: The re-execution perturbation: another thread count and initial weights perturbed at 1e-6 relative.
PERTURBATION = (("init_perturb", 1e-6), ("threads", 2))


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def blocks_of(grid: str) -> list[tuple[str, str]]:
    """The grid's (dataset, model) blocks in the order its jobs list them."""
    return list(dict.fromkeys((j.dataset, j.model) for j in make_jobs(grid)))


def block_jobs(
    block: tuple[str, str], grid: str = "heldout", perturb: bool = False, noise: str | None = None
):
    jobs = [j for j in make_jobs(grid) if (j.dataset, j.model) == block]
    if noise:  # "asymmetric:0.4": one noise setting of the block
        kind, rate = noise.split(":")
        jobs = [j for j in jobs if j.noise == kind and j.noise_rate == float(rate)]
    if perturb:
        jobs = [dataclasses.replace(j, options=tuple(sorted({**dict(j.options), **dict(PERTURBATION)}.items()))) for j in jobs]  # fmt: skip
    return jobs


def cleanlab_block(root: Path, block: tuple[str, str], grid: str = "heldout", perturb: bool = False) -> None:
    for job in block_jobs(block, grid, perturb):
        if job.variant != "full" or job.noise == "none":
            continue
        run_dir = root / job.name
        if cleanlab_baseline.result_path(root, job.name).exists():
            continue
        if not is_complete(run_dir):
            log(f"cleanlab: {job.name} has no complete full run; skipped")
            continue
        config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        t0 = time.perf_counter()
        cleanlab_baseline.run_cleanlab(config, root)
        log(f"cleanlab {job.name} {time.perf_counter() - t0:.1f}s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument(
        "--grid",
        choices=("heldout", "heldout2", "heldout3"),
        default="heldout",
        help="H (seeds 100-104), H' (105-109) or H″ (110-119)",
    )
    p.add_argument("--only", metavar="DATASET:MODEL", help="one block, e.g. fashion-mnist:mlp")
    p.add_argument("--perturb", action="store_true", help="re-execution check: 2 threads, weights +1e-6 rel.")
    p.add_argument("--noise", metavar="KIND:RATE", help="one noise setting only, e.g. asymmetric:0.4")
    p.add_argument("--no-cleanlab", action="store_true", help="train the runs only")
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    if args.grid == "heldout3" or args.only:
        blocks = blocks_of(args.grid)
        if args.only:
            blocks = [b for b in blocks if b == tuple(args.only.split(":"))]
        order = [(what, b) for b in blocks for what in ("train", "cleanlab")]
    else:
        order = [(what, BLOCKS[i]) for what, i in ORDER]
    if args.no_cleanlab:
        order = [(what, b) for what, b in order if what == "train"]
    for what, block in order:
        log(f"{what} {block}")
        if what == "train":
            threads = 2 if args.perturb else 1
            jobs = block_jobs(block, args.grid, args.perturb, args.noise)
            run_jobs(jobs, root, workers=1, threads=threads, log=log)
        else:
            cleanlab_block(root, block, args.grid, args.perturb)
    log("done")


if __name__ == "__main__":
    main()
