"""``gwa bench``: the options, and the glue that calls :func:`gwa.bench.command.run_bench` with them."""

from __future__ import annotations

import argparse
import shlex
import sys

from gwa.bench.command import run_bench
from gwa.bench.grid import GRIDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid",
        choices=GRIDS,
        default="reduced",
        help="reduced: seconds, keeps the code path alive; full: the development grid of "
        "docs/results.md; case: the Fashion-MNIST 40%% failure case of the issue; heldout, heldout2: "
        "the pre-registered held-out grids H and H' of docs/protocol.md; heldout3: grid H'' (section 8, 840 "
        "runs, about 80 CPU-hours on an idle CPU) (default reduced)",
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
    parser.add_argument(
        "--per-run",
        metavar="CSV",
        help="also write the per-run results file (one row per run x criterion, gwa.bench.perrun) that "
        "experiments/heldout_analysis.py --per-run reads",
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


def run(args: argparse.Namespace) -> int:
    command = (
        "gwa bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "gwa bench (called from Python)"
    )
    return run_bench(
        grid=args.grid,
        out=args.out,
        from_runs=args.from_runs,
        report=args.report,
        per_run=getattr(args, "per_run", None),
        workers=args.workers,
        threads=args.threads,
        seeds=args.seeds,
        cleanlab=args.cleanlab,
        command=command,
    )
