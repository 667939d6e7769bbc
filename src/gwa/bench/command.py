"""What ``gwa bench`` runs: train the grid (unless ``from_runs``), tabulate it (the options: :mod:`gwa.cli.bench`)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from gwa.bench.grid import is_complete, make_jobs, run_jobs, variant_of
from gwa.bench.results import collect
from gwa.bench.tables import render


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


def run_bench(
    *,
    grid: str = "reduced",
    out: str | Path = "runs/bench",
    from_runs: str | Path | None = None,
    report: str | Path | None = None,
    per_run: str | Path | None = None,
    workers: int = 1,
    threads: int = 1,
    seeds: int | None = None,
    cleanlab: bool = False,
    command: str = "gwa bench (called from Python)",
) -> int:
    """Train ``grid``'s runs into ``out`` (or read the finished ones in ``from_runs``), tabulate them into
    ``report`` (default ``OUT/bench.md``) and print the tables; returns 1 when a run of the grid failed, else 0.

    ``per_run`` also writes the per-run results file (:mod:`gwa.bench.perrun`); ``cleanlab`` also runs the
    cleanlab baseline; ``command`` is the command line recorded in ``bench.json``.
    """
    for name, value in (("workers", workers), ("threads", threads)):
        if value < 1:
            raise ValueError(f"Expected `--{name}` >= 1; got {value}.")
    if seeds is not None and seeds < 1:
        raise ValueError(f"Expected `--seeds` >= 1; got {seeds}.")
    if from_runs:
        root = Path(from_runs)
        if not root.is_dir():
            raise FileNotFoundError(f"--from-runs {root} is not a directory.")
        meta_path = root / "bench.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        import torch

        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(grid, cuda=torch.cuda.is_available(), seeds=seeds)
        t0 = time.perf_counter()
        errors = run_jobs(
            jobs,
            root,
            workers=workers,
            threads=threads,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        meta = {
            "command": command,
            "grid": grid,
            "workers": workers,
            "threads": threads,
            "elapsed_s": time.perf_counter() - t0,
            "machine": machine_description(),
            "errors": errors,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        (root / "bench.json").write_text(json.dumps(meta, indent=2) + "\n")
        if errors:
            print(f"{len(errors)} run(s) failed:\n  " + "\n  ".join(errors), file=sys.stderr)
    if cleanlab:
        run_cleanlab_all(root, log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = {**meta, "aggregate_command": f"gwa bench --from-runs {shlex.quote(str(root))}"}
    results = collect(root, log=lambda m: print(m, file=sys.stderr))
    if not results:
        raise ValueError(f"No complete bench run directories under {root}.")
    if per_run:
        from gwa.bench import perrun

        path = perrun.write_csv(perrun.rows_from_runs(results), Path(per_run))
        print(f"per-run results written to {path}", file=sys.stderr)
    text = render(results, meta)
    tables = Path(report) if report else root / "bench.md"
    tables.parent.mkdir(parents=True, exist_ok=True)
    tables.write_text(text)
    print(text)
    print(f"tables written to {tables}", file=sys.stderr)
    return 1 if (not from_runs and meta.get("errors")) else 0
