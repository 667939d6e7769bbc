"""``gwa bench``: its arguments, and the command: train the grid (unless ``--from-runs``), tabulate it."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from gwa.bench.grid import GRIDS, is_complete, make_jobs, run_jobs, variant_of
from gwa.bench.results import collect
from gwa.bench.tables import render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid",
        choices=GRIDS,
        default="reduced",
        help="reduced: seconds, keeps the code path alive; full: the development grid of "
        "docs/benchmarks.md; case: the Fashion-MNIST 40%% failure case of the issue; heldout, heldout2: "
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
        "benchmarks/heldout_analysis.py --per-run reads",
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


def run_cleanlab_all(root: Path, log=print) -> None:
    """cleanlab for every complete noisy full run under ``root`` that has no result yet (resumable)."""
    from gwa.bench import cleanlab_baseline
    from gwa.runner.config import RunConfig

    for cfg in sorted(Path(root).glob("*/config.json")):
        c = json.loads(cfg.read_text())
        if (
            c.get("noise", "none") == "none"
            or variant_of(c.get("val_frac", 0.0)) != "full"
            or not is_complete(cfg.parent)
            or cleanlab_baseline.result_path(root, cfg.parent.name).exists()
        ):
            continue
        t0 = time.perf_counter()
        config = RunConfig.from_dict({**c, "quiet": True})
        cleanlab_baseline.run_cleanlab(config, root)
        log(f"cleanlab {cfg.parent.name} {time.perf_counter() - t0:.1f}s")


def machine_description() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def run(args: argparse.Namespace) -> int:
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"Expected `--{name}` >= 1; got {getattr(args, name)}.")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"Expected `--seeds` >= 1; got {args.seeds}.")
    command = (
        "gwa bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "gwa bench (called from Python)"
    )
    if args.from_runs:
        root = Path(args.from_runs)
        if not root.is_dir():
            raise FileNotFoundError(f"--from-runs {root} is not a directory.")
        meta_path = root / "bench.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        import torch

        root = Path(args.out)
        root.mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(args.grid, cuda=torch.cuda.is_available(), seeds=args.seeds)
        t0 = time.perf_counter()
        errors = run_jobs(
            jobs,
            root,
            workers=args.workers,
            threads=args.threads,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        meta = {
            "command": command,
            "grid": args.grid,
            "workers": args.workers,
            "threads": args.threads,
            "elapsed_s": time.perf_counter() - t0,
            "machine": machine_description(),
            "errors": errors,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        (root / "bench.json").write_text(json.dumps(meta, indent=2) + "\n")
        if errors:
            print(f"{len(errors)} run(s) failed:\n  " + "\n  ".join(errors), file=sys.stderr)
    if args.cleanlab:
        run_cleanlab_all(root, log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = {**meta, "aggregate_command": f"gwa bench --from-runs {shlex.quote(str(root))}"}
    results = collect(root, log=lambda m: print(m, file=sys.stderr))
    if not results:
        raise ValueError(f"No complete bench run directories under {root}.")
    if getattr(args, "per_run", None):
        from gwa.bench import perrun

        path = perrun.write_csv(perrun.rows_from_runs(results), Path(args.per_run))
        print(f"per-run results written to {path}", file=sys.stderr)
    text = render(results, meta)
    out = Path(args.report) if args.report else root / "bench.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"tables written to {out}", file=sys.stderr)
    return 1 if (not args.from_runs and meta.get("errors")) else 0
