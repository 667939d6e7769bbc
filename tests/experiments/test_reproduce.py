"""experiments/reproduce.mk and experiments/timed.py: the one command that regenerates docs/results.md's tables.

The parts take minutes to hours, so the suite checks what can break without running them: make resolves every
target, every script the makefile calls exists and accepts every flag it is given, and the timing wrapper
records times, passes output through and propagates failures.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gwa.cli.bench import add_arguments

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "experiments" / "reproduce.mk"
TIMED = ROOT / "experiments" / "timed.py"


def _dry_run(out: Path) -> list[list[str]]:
    result = subprocess.run(
        ["make", "-n", "-f", str(MAKEFILE), f"OUT={out}", "PYTHON=python", "all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.replace("\\\n", " ").splitlines()  # recipes continued over lines
    return [shlex.split(line.split(">", 1)[0]) for line in lines if line.startswith("python")]


def _declared_flags(script: Path) -> set[str]:
    """The options ``script --help`` lists (whatever module declares them)."""
    usage = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(re.findall(r"(--[a-z][a-z-]*)", usage))


@pytest.mark.slow  # `make -n` and every script's --help, each in a subprocess
def test_every_part_is_planned_with_existing_scripts_and_flags(tmp_path):
    commands = _dry_run(tmp_path / "repro")
    parts = set()
    gwa_parser = argparse.ArgumentParser()
    add_arguments(gwa_parser)
    for argv in commands:
        if argv[1] == "experiments/timed.py" and "--" in argv:
            parts.add(argv[3])
            argv = argv[argv.index("--") + 1 :]
        if argv[1:3] == ["-m", "gwa.cli"]:
            assert argv[3] == "bench"
            gwa_parser.parse_args(argv[4:])  # raises SystemExit on an unknown flag
            continue
        script = ROOT / argv[1]
        assert script.is_file(), f"reproduce.mk calls {argv[1]}, which does not exist"
        if script.name == "timed.py":
            continue
        used = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")}
        assert used <= _declared_flags(script), (
            f"{script.name} does not accept {used - _declared_flags(script)}"
        )
    assert parts == {
        "dev_full",
        "dev_case",
        "estimator_bias",
        "run_length_digits",
        "run_length_mnist1d",
        "heldout",
        "heldout2",
        "finetune_rule",
        "model_ranking",
    }


def test_timed_records_the_time_and_passes_the_output_through(tmp_path):
    timings = tmp_path / "timings"
    ok = subprocess.run(
        [sys.executable, str(TIMED), str(timings), "hello", "--", sys.executable, "-c", "print('table row')"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0
    assert ok.stdout == "table row\n"
    record = json.loads((timings / "hello.json").read_text())
    assert record["part"] == "hello"
    assert record["exit_code"] == 0
    assert 0 <= record["seconds"] < 60
    assert record["command"][-1] == "print('table row')"

    failed = subprocess.run(
        [
            sys.executable,
            str(TIMED),
            str(timings),
            "broken",
            "--",
            sys.executable,
            "-c",
            "raise SystemExit(3)",
        ],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 3  # make stops on the failing part
    assert json.loads((timings / "broken.json").read_text())["exit_code"] == 3

    table = subprocess.run(
        [sys.executable, str(TIMED), str(timings), "--summary"], capture_output=True, text=True, check=True
    ).stdout
    assert "| hello |" in table
    assert "| broken |" in table
    assert "Sum of the parts" in table


def test_timed_refuses_a_part_without_a_command(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TIMED), str(tmp_path), "alone"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "PART -- COMMAND" in result.stderr
