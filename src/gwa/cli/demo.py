"""``gwa demo``: GWA at work in about a minute on a CPU, with no network and no files to fetch.

A small 1-D CNN is trained on MNIST-1D (from the package's generator) with 20% of its training labels flipped
at random; 10% of the noisy training set is held out as a validation split, as one would without GWA. At the
end the demo prints which epoch each stop rule picks and its test accuracy, and how well negative alignment
finds the flipped labels, then writes the HTML report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEMO_NAME = "gwa-demo"
#: The full demo and the --quick one (for tests and a first look).
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"mnist1d_samples": 4000, "epochs": 40, "width": 32, "lr": 3e-3},
    "quick": {"mnist1d_samples": 1000, "epochs": 6, "width": 8, "lr": 3e-3},
}
#: The rows of the final table: criterion name -> what it is.
ROWS = (
    ("gwa", "GWA (gwa's default rule)"),
    ("gwa_paper", "GWA, paper's rule"),
    ("align_mean", "mean alignment, paper's rule"),
    ("val", "validation split (10%)"),
    ("last", "last epoch"),
    ("oracle", "best test epoch (oracle)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=DEMO_NAME,
        help=f"run directory to write (default ./{DEMO_NAME}); a previous demo there is replaced",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run (seconds)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for noise, split, init and order (default 0)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip writing the HTML report")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no progress bar and no line per epoch (the results are still printed)",
    )


def demo_config(out, *, quick: bool = False, seed: int = 0, quiet: bool = False):
    from gwa.runner.config import RunConfig

    return RunConfig(
        dataset="mnist1d",
        model="cnn",
        noise="symmetric",
        noise_rate=0.2,
        val_frac=0.1,
        optimizer="adam",
        batch_size=128,
        seed=seed,
        device="cpu",
        name=DEMO_NAME,
        out=str(out),
        overwrite=_replaceable(Path(out)),
        quiet=quiet,
        **SETTINGS["quick" if quick else "full"],
    )


def _replaceable(out: Path) -> bool:
    """True when ``out`` holds an earlier demo run (replaced silently); anything else is left alone."""
    if not out.exists() or not any(out.iterdir()):
        return False
    from gwa.rundir import RunDirError, read_config

    try:
        return read_config(out).get("name") == DEMO_NAME
    except (RunDirError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    import time

    import torch
    from gwa.runner.train import run_training

    # The demo's model is tiny: one thread does the same work without the threads' synchronisation cost
    # (measured on a loaded 2-core machine: 19.5 s of CPU time with one thread against 152 s with two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = demo_config(args.out, quick=args.quick, seed=args.seed, quiet=args.quiet)
    print(
        f"gwa demo: MNIST-1D, {config.mnist1d_samples} generated samples, 20% symmetric label noise, 1-D CNN, "
        f"{config.epochs} epochs on the CPU",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    try:
        out = run_training(config, progress=not args.quiet)
    finally:
        torch.set_num_threads(threads)
    elapsed = time.perf_counter() - t0
    print(render_results(out, elapsed=elapsed, write_html=not args.no_report))
    return 0


def render_results(out: Path, *, elapsed: float | None = None, write_html: bool = True) -> str:
    """The demo's closing text: stop rules and their test accuracy, flagged samples, where the report is."""
    from gwa.rundir import load_run
    from gwa.runner.summary import noise_lines, trust_lines

    run = load_run(out)
    assert run.summary is not None  # the demo's run has just written it
    criteria = run.summary["criteria"]
    lines = [
        f"\nrun directory: {out}" + (f"  ({elapsed:.0f} s)" if elapsed is not None else ""),
        "",
        f"{'stop rule':<28}{'epoch':>6}{'test acc':>10}",
        "-" * 44,
    ]
    for key, label in ROWS:
        if key in criteria:
            info = criteria[key]
            acc = info.get("test_acc")
            lines.append(f"{label:<28}{info['epoch']:>6}{'n/a' if acc is None else f'{100 * acc:.1f}%':>10}")
    lines += noise_lines(run.summary) + trust_lines(run.summary)
    lines += ["", _tracking_text(run), _flag_text(run), ""]
    lines.append(_report_text(out) if write_html else f"report: run `gwa report {out}`")
    return "\n".join(lines)


def _tracking_text(run) -> str:
    """How closely the epoch curve follows test accuracy, and where flipped samples' alignment sits."""
    import numpy as np

    align, test = run.series("align_mean"), run.series("test_acc")
    ok = np.isfinite(align) & np.isfinite(test)
    r = (
        float(np.corrcoef(align[ok], test[ok])[0, 1])
        if ok.sum() >= 3 and np.std(align[ok]) > 0
        else float("nan")
    )
    last = run.scores(run.epochs[-1])
    mask = run.noise_mask.astype(bool)
    return (
        f"mean alignment vs test accuracy over the {len(run.epochs)} epochs: Pearson r = {r:.2f}\n"
        f"last epoch's mean alignment: flipped labels {np.nanmean(last[mask]):+.3f}, "
        f"clean labels {np.nanmean(last[~mask]):+.3f}"
    )


def _flag_text(run) -> str:
    from gwa.report import flag_samples

    result = flag_samples(run)  # the documented default rule

    def show(v):
        return "n/a" if v is None else f"{v:.2f}"

    return (
        f"flagged as likely mislabeled by rule {result.description}: "
        f"{int(result.flagged.sum())} of {result.sample_ids.size} training samples; against the "
        f"{int(run.noise_mask.sum())} flipped labels: precision {show(result.precision)}, recall "
        f"{show(result.recall)}"
    )


def _report_text(out: Path) -> str:
    try:
        from gwa.report import write_report
    except ModuleNotFoundError as exc:  # matplotlib missing: the run directory is still complete
        return f"report: not written ({exc}); install gwa-alignment[cli] and run `gwa report {out}`"
    return f"report: {write_report(out)}"
