"""``gwa flag RUN``: the arguments, and the glue that calls :func:`gwa.report.flag_samples`, writes the ranking,
the per-class summary and the cleanlab-compatible export, and prints what it found (the rules and the files are
described in :mod:`gwa.report._flag`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwa.policy import DEFAULT_FLAG_RULE, DEFAULT_LAST_K, FLAG_RULES, PAIR_SLACK
from gwa.report import _analysis as A
from gwa.report import _flag_export as flag_export
from gwa.report import flag_samples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{parser.description}. Rules: 'window' (default): mean alignment below T (default 0) over the "
        "epochs after the warm-up through the epoch gwa's default rule chooses past the early transient, "
        "ranked by that mean; 'pair_aware' (chosen instead of 'window' when the run's noise map reports "
        f"swapped class pairs): 'window' minus {PAIR_SLACK:g} x the class's alignment scale for samples in a "
        "swapped pair's cell (given label, majority prediction); 'lastk': alignment below T (default 0) in each "
        "of the last k epochs where the sample was seen, ranked by its mean over those epochs; "
        "'mean': mean alignment over all epochs below T (default 0); 'frac': fraction of epochs "
        "with alignment < 0 at least T (default 0.5). --top K flags the first K of the ranking "
        "instead."
    )
    parser.add_argument("run", metavar="RUN", help="the run directory")
    parser.add_argument(
        "--rule",
        choices=FLAG_RULES,
        default=None,
        help=f"force a flagging rule (default: pair_aware under class-pair noise, else {DEFAULT_FLAG_RULE}; "
        "see above)",
    )
    parser.add_argument(
        "--last-k",
        type=int,
        default=DEFAULT_LAST_K,
        metavar="K",
        help=f"epochs the lastk rule looks at (default {DEFAULT_LAST_K})",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=None, metavar="K", help="flag the K highest-ranked samples")
    which.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="T",
        help="the rule's threshold (defaults: window 0, pair_aware 0, lastk 0, mean 0, frac 0.5)",
    )
    parser.add_argument("--out", metavar="CSV", default=None, help="output CSV (default RUN/flagged.csv)")
    parser.add_argument(
        "--export-dir",
        metavar="DIR",
        default=None,
        help="folder for flagged_classes.csv and the cleanlab-compatible label_issues.npy, label_quality.npy "
        "and label_issues.csv, indexed by the source dataset (default: the folder of --out)",
    )


def run(args: argparse.Namespace) -> int:
    loaded = A.open_run(args.run)
    result = flag_samples(loaded, rule=args.rule, last_k=args.last_k, top=args.top, threshold=args.threshold)

    out = Path(args.out) if args.out is not None else Path(args.run) / "flagged.csv"
    result.to_csv(out)
    print(result.summary())
    classes = flag_export.per_class_rows(result, result.class_names)
    lines = flag_export.describe_classes(classes)
    if lines:
        print("classes with the most flags (given label: flagged share, where their predictions went):")
        print("\n".join(lines))
    folder = Path(args.export_dir) if args.export_dir is not None else out.parent
    summary = flag_export.write_class_summary(classes, folder / "flagged_classes.csv")
    export = flag_export.write_cleanlab_export(result, loaded, folder, result.class_names)
    print(f"ranking written to {out}; per-class summary to {summary}")
    print(
        f"cleanlab-compatible export (by source-dataset index): {export['label_issues'].name} (mask), "
        f"{export['label_quality'].name} (quality, lower = more suspect), {export['label_issues_csv'].name} "
        f"in {folder}"
    )
    return 0
