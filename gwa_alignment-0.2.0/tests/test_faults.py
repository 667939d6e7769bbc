"""Fault injection on ``gwa train``: SIGKILL at evenly spread file writes, then recovery; two concurrent writers.

The kill uses the test-only hook :data:`gwa.rundir.FAULT_ENV`: the process kills itself at its k-th atomic write,
after the temporary file is synced and before the rename that commits it (the most hostile moment).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gwa import rundir
from gwa.rundir import _atomic

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

ARGS = [
    "--dataset",
    "digits",
    "--num-train",
    "200",
    "--hidden",
    "16",
    "--epochs",
    "3",
    "--signals",
    "loss",
    "-q",
]
#: config.json keys that name how a run was started, not what it computed.
HOW = ("resume", "overwrite", "quiet", "out")


def _env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **extra}


def _gwa(*argv, **env):
    return subprocess.run(
        [sys.executable, "-m", "gwa.cli", "train", *argv],
        check=False,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _writes_of_a_run(tmp_path) -> int:
    """Train the reference run in this process, counting its atomic writes."""
    from gwa.cli import main

    count = 0

    def counting():
        nonlocal count
        count += 1

    original, _atomic._fault_point = _atomic._fault_point, counting
    try:
        assert main(["train", *ARGS, "--out", str(tmp_path / "ref")]) == 0
    finally:
        _atomic._fault_point = original
    return count


def _contents(path) -> dict:
    """Everything a run computed: metrics (but wall time), config (but how it was started), summary, every
    array, and the final weights."""
    from gwa.runner import checkpoint

    config = {k: v for k, v in rundir.read_config(path).items() if k not in HOW}
    metrics = [{k: v for k, v in r.items() if k != "wall_time"} for r in rundir.read_metrics(path)]
    arrays = {str(f.relative_to(path)): np.load(f).tobytes() for f in sorted(path.rglob("*.npy"))}
    weights = torch.load(checkpoint.marked_file(path, "last"), weights_only=True)["model"]
    return {
        "config": config,
        "metrics": metrics,
        "summary": json.loads((path / "summary.json").read_text()),
        "arrays": arrays,
        "weights": {k: v.numpy().tobytes() for k, v in weights.items()},
        "files": sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()),
    }


@pytest.mark.slow
def test_sigkill_at_evenly_spread_writes_then_recovery_gives_the_uninterrupted_run(tmp_path):
    from gwa.cli import main

    total = _writes_of_a_run(tmp_path)
    reference = _contents(tmp_path / "ref")
    assert total >= 20 and reference["config"]["status"] == "complete"
    points = sorted({1, total, *np.linspace(1, total, 6).round().astype(int).tolist()})
    for k in points:
        out = tmp_path / f"kill{k}"
        killed = _gwa(*ARGS, "--out", str(out), **{rundir.FAULT_ENV: str(k)})
        assert killed.returncode == -signal.SIGKILL, (k, killed.stderr)
        # Killed before config.json was first committed, nothing was written: the same command starts it again.
        # After that, --resume finishes it.
        again = ["--resume"] if (out / "config.json").exists() else []
        assert main(["train", *ARGS, "--out", str(out), *again]) == 0, k
        got = _contents(out)
        assert got == reference, f"kill at write {k} of {total}"
        assert not list(out.rglob("*.tmp")), k


_STOPPED = """
import os, signal, sys
import gwa.rundir._writer as rd  # where RunWriter looks up write_json_atomic
original = rd.write_json_atomic
def stop_after_config(path, obj):
    original(path, obj)
    if path.name == "config.json":
        rd.write_json_atomic = original
        os.kill(os.getpid(), signal.SIGSTOP)  # hold the run, mid-way, until the test continues it
rd.write_json_atomic = stop_after_config
from gwa.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
@pytest.mark.hostile("refused")
def test_a_second_gwa_train_into_a_busy_run_directory_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-c", _STOPPED, *ARGS, "--seed", "1", "--out", str(out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists():  # the first writer holds the lock and is stopped mid-run
            assert first.poll() is None and time.monotonic() < deadline, (
                first.stderr.read() if first.stderr else ""
            )
            time.sleep(0.05)
        second = _gwa(*ARGS, "--seed", "2", "--overwrite", "--out", str(out))
        assert second.returncode == 2
        assert second.stderr == (
            f"gwa train: error: Run directory {out} is being written by another process "
            f"(pid {first.pid}, holding {out / 'gwa.lock'}); wait for it to finish or choose "
            f"another --out.\n"
        )
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    config = rundir.read_config(out)
    assert config["seed"] == 1 and config["status"] == "complete"
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2, 3]  # one run's rows, not two interleaved
