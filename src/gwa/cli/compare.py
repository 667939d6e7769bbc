"""``gwa compare RUN [RUN ...]``: the arguments, and the glue that calls :func:`gwa.report.compare_runs`, prints
its tables and writes them (and the figure) where asked."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwa.report import compare_runs
from gwa.rundir import write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories to compare")
    parser.add_argument(
        "--out", metavar="MD", default=None, help="also write the markdown tables to this file"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="also draw each statistic against test accuracy into this PNG",
    )


def run(args: argparse.Namespace) -> int:
    result = compare_runs(args.runs)
    text = result.to_markdown()
    print(text)
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, lambda fh: fh.write((text + "\n").encode()))
        print(f"tables written to {args.out}")
    if args.plot is not None:
        result.plot(args.plot)
        print(f"figure written to {args.plot}")
    return 0
