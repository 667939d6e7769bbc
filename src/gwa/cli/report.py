"""``gwa report RUN [--out DIR] [--top-samples K]``: the arguments, and the glue that calls
:func:`gwa.report.write_report` and prints where the page went."""

from __future__ import annotations

import argparse

from gwa.report import _analysis as analysis
from gwa.report import write_report
from gwa.report._page import DEFAULT_TOP_SAMPLES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", help="the run directory (written by `gwa train` or an integration)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="where to write report.html and the PNG figures (default: RUN/report)",
    )
    parser.add_argument(
        "--top-samples",
        type=int,
        default=DEFAULT_TOP_SAMPLES,
        metavar="K",
        help=f"rows in the table of most negatively aligned samples (default {DEFAULT_TOP_SAMPLES})",
    )


def run(args: argparse.Namespace) -> int:
    run_dir = analysis.open_run(args.run)
    path = write_report(run_dir, args.out, top_samples=args.top_samples)
    for note in analysis.run_notes(run_dir):
        print(f"note: {note}")
    print(f"report written to {path}")
    return 0
