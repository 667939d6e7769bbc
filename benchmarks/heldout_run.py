"""Train the held-out grid of docs/protocol.md in its pre-registered order, resumably, in one process.

Order: H1 (MNIST-1D CNN) runs, H2 (Fashion-MNIST MLP) runs, cleanlab folds for H1, for H2, H3 (Fashion-MNIST CNN)
runs, cleanlab for H3. A finished run or cleanlab result is skipped when started again.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python benchmarks/heldout_run.py /work/evid_runs/heldout
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gwa.bench import cleanlab_baseline
from gwa.bench.grid import is_complete, make_jobs, run_jobs
from gwa.runner.config import RunConfig

BLOCKS = (("mnist1d", "cnn"), ("fashion-mnist", "mlp"), ("fashion-mnist", "cnn"))
ORDER = (("train", 0), ("train", 1), ("cleanlab", 0), ("cleanlab", 1), ("train", 2), ("cleanlab", 2))


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def block_jobs(block: int, grid: str = "heldout"):
    dataset, model = BLOCKS[block]
    return [j for j in make_jobs(grid) if j.dataset == dataset and j.model == model]


def cleanlab_block(root: Path, block: int, grid: str = "heldout") -> None:
    for job in block_jobs(block, grid):
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
        "--grid", choices=("heldout", "heldout2"), default="heldout", help="H (seeds 100-104) or H' (105-109)"
    )
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    for what, block in ORDER:
        log(f"{what} {BLOCKS[block]}")
        if what == "train":
            run_jobs(block_jobs(block, args.grid), root, workers=1, threads=1, log=log)
        else:
            cleanlab_block(root, block, args.grid)
    log("done")


if __name__ == "__main__":
    main()
