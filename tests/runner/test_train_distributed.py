import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gwa import cli
from gwa.rundir import load_run

ARGS = [
    "--dataset",
    "digits",
    "--num-train",
    "240",
    "--hidden",
    "16",
    "--batch-size",
    "64",
    "--epochs",
    "2",
    "--noise",
    "symmetric",
    "--noise-rate",
    "0.2",
    "--val-frac",
    "0.1",
    "--device",
    "cpu",
]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_torchrun_two_gloo_processes_match_one_process(tmp_path):
    """Each rank trains on its half of the same global batches; DDP's averaged gradient is the global batch's,
    so two processes log what one does (up to float summation order), and only rank 0 writes."""
    assert cli.main(["train", *ARGS, "-q", "--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "gwa.cli",
            "train",
            *ARGS,
            "--out",
            str(tmp_path / "ddp"),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone reports
    single, ddp = load_run(tmp_path / "single"), load_run(tmp_path / "ddp")
    assert ddp.complete and ddp.epochs == [1, 2]
    for a, b in zip(single.metrics, ddp.metrics):
        for key in (
            "train_loss",
            "train_acc",
            "align_mean",
            "gwa",
            "val_acc",
            "test_acc",
            "n_scores",
            "step",
        ):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        assert b["prediction_changes"] == a["prediction_changes"]
    np.testing.assert_allclose(ddp.score_matrix(), single.score_matrix(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ddp.score_matrix("pred"), single.score_matrix("pred"))
    assert ddp.summary["criteria"] == single.summary["criteria"]
