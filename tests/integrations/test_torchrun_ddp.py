"""examples/torchrun_ddp.py: two gloo ranks under torchrun give the GWA and per-sample scores of one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gwa
from gwa.rundir import load_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torchrun_ddp.py"
EPOCHS = 6
ARGS = ["--double", "--epochs", str(EPOCHS), "--patience", "1", "--n-train", "480", "--batch-size", "32"]


def run(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"


@pytest.mark.slow  # three Python processes importing torch and sklearn
def test_two_ranks_equal_one_process(tmp_path):
    run([sys.executable, str(EXAMPLE), "--out", str(tmp_path / "one"), *ARGS])
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(EXAMPLE),
            "--out",
            str(tmp_path / "two"),
            *ARGS,
        ]
    )
    one, two = load_run(tmp_path / "one"), load_run(tmp_path / "two")
    # Every rank decides on the same merged summary: both runs stop at the same epoch, before the planned ones.
    stopped = one.summary["stopped_epoch"]
    assert stopped is not None and stopped < EPOCHS and two.summary["stopped_epoch"] == stopped
    assert one.epochs == two.epochs == list(range(1, stopped + 1))
    assert two.config["world_size"] == 2 and one.config["world_size"] == 1
    # The best epoch is the core's post-hoc choice with the planned epochs, in both runs.
    best = gwa.select_epoch(one.metrics, total_epochs=EPOCHS)
    assert (
        one.summary["best_epoch"]
        == two.summary["best_epoch"]
        == best
        == one.summary["criteria"]["gwa"]["epoch"]
    )
    assert stopped - best == 1  # patience 1
    a, b = one.score_matrix(), two.score_matrix()
    assert a.shape == (stopped, 480) and not np.isnan(b).any()
    # float64 training; only the gradient summation order differs; scores are stored as float32.
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-7)
    for r1, r2, epoch in zip(one.metrics, two.metrics, two.epochs):
        assert r2["n_scores"] == r1["n_scores"] == 480
        assert r2["gwa"] == pytest.approx(r1["gwa"], rel=1e-9)
        assert r2["gwa_paper"] == pytest.approx(r1["gwa_paper"], rel=1e-9)
        assert r2["align_mean"] == pytest.approx(r1["align_mean"], rel=1e-9)
        assert r2["test_acc"] == r1["test_acc"]
        # And the merged moments are those of the gathered scores (numpy core).
        s = gwa.summarize(b[epoch - 1].astype(np.float64))
        assert r2["gwa"] == pytest.approx(s.gwa, rel=1e-5) and r2["gwa_paper"] == pytest.approx(
            s.gwa_paper, rel=1e-5
        )
