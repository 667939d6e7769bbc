"""Run one part of experiments/reproduce.mk and record its wall time; or summarise the recorded times.

    python experiments/timed.py TIMINGS_DIR PART -- COMMAND ...   # runs COMMAND, writes TIMINGS_DIR/PART.json
    python experiments/timed.py TIMINGS_DIR --summary              # markdown table of every recorded part

The command's output passes through unchanged and its exit status is returned, so make stops on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# benchmarks/_machine.py: one machine line for the performance scripts and the experiments
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _machine import cpu_model


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(timings: Path, part: str, command: list[str]) -> int:
    timings.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC)
    t0 = time.perf_counter()
    code = subprocess.call(command)
    record = {
        "part": part,
        "seconds": round(time.perf_counter() - t0, 1),
        "start": start.isoformat(timespec="seconds"),
        "end": datetime.now(UTC).isoformat(timespec="seconds"),
        "exit_code": code,
        "commit": _commit(),
        "command": command,
    }
    (timings / f"{part}.json").write_text(json.dumps(record, indent=1) + "\n")
    return code


def summary(timings: Path) -> str:
    records = sorted((json.loads(p.read_text()) for p in timings.glob("*.json")), key=lambda r: r["start"])
    if not records:
        raise SystemExit(f"no timings in {timings}")
    first = min(datetime.fromisoformat(r["start"]) for r in records)
    last = max(datetime.fromisoformat(r["end"]) for r in records)
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores",
        "",
        "| part | commit | start (UTC) | wall time | exit |",
        "|---|---|---|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['part']} | {r['commit']} | {r['start'][11:19]} | {r['seconds'] / 60:.1f} min | {r['exit_code']} |"
        )
    total = sum(r["seconds"] for r in records)
    lines += [
        "",
        (
            f"Sum of the parts: {total / 60:.1f} min; from the first start to the last end: "
            f"{(last - first).total_seconds() / 60:.1f} min (the parts may have run two at a time, or in "
            "separate invocations)."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("timings", type=Path, help="folder of the per-part timing records")
    p.add_argument("part", nargs="?", help="name of the part to run (then give the command after --)")
    p.add_argument("--summary", action="store_true", help="print the table of recorded parts instead")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(args.timings))
        return
    if not args.part or not command:
        p.error("give PART -- COMMAND ..., or --summary")
    raise SystemExit(run(args.timings, args.part, command))


if __name__ == "__main__":
    main()
