"""The hostile-input suite, torch.distributed (gloo, 2 ranks): an error one rank finds in its own data at
``end_epoch`` reaches the other rank at once (no wait for the process-group timeout), and ``--resume`` of a
finished run under torchrun ends on every rank (issue 20, items 5 and 7)."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - torch built without torch.distributed
    pytest.skip("torch built without torch.distributed", allow_module_level=True)
import torch.multiprocessing as mp

WORLD = 2
#: The process group's timeout in the worker: a rank left waiting in a collective would fail only after it.
PG_TIMEOUT_S = 120


def _batch(seed, n=4, c=3, d=5):
    g = torch.Generator().manual_seed(seed)
    x, w = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(c, d, generator=g, dtype=torch.float64),
    )
    return x @ w.T, torch.randint(0, c, (n,), generator=g), x, w


def _bad_id_on_rank_1(rank):
    from gwa.torch import GWATracker

    tracker = GWATracker(num_samples=16)
    for k in range(2):
        logits, y, x, w = _batch(k)
        ids = torch.arange(4 * k, 4 * k + 4) + 8 * rank
        if rank == 1 and k == 1:
            ids[0] = 99  # out of range, in a later batch: found only at end_epoch, only here
        tracker.update(logits, y, ids, embeddings=x, weight=w)
    tracker.end_epoch()


def _soft_targets_off_on_rank_0(rank):
    from gwa.torch import GWATracker

    tracker = GWATracker(num_samples=16)
    for k in range(2):
        logits, _, x, w = _batch(k)
        targets = torch.softmax(torch.randn(4, 3, dtype=torch.float64), dim=1)
        if rank == 0 and k == 1:
            targets = targets * 1.5  # rows that stop summing to 1 after the first batch
        tracker.update(logits, targets, torch.arange(4 * k, 4 * k + 4) + 8 * rank, embeddings=x, weight=w)
    tracker.end_epoch()


CASES = {"bad_id": _bad_id_on_rank_1, "soft": _soft_targets_off_on_rank_0}


def _worker(rank, port, case, out_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=PG_TIMEOUT_S),
    )
    t0 = time.monotonic()
    try:
        CASES[case](rank)
        outcome = ("ok", "")
    except Exception as error:  # the outcome is the test's subject
        outcome = (type(error).__name__, str(error))
    with open(f"{out_path}.{rank}", "w") as fh:
        fh.write(f"{outcome[0]}\n{time.monotonic() - t0:.3f}\n{outcome[1]}")
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.hostile("refused", cls="distributed local errors")
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad_id", "got 1 id(s) out of range in epoch 1 (min 99, max 99)"),
        ("soft", "got 4 row(s) that do not in epoch 1"),
    ],
)
def test_a_rank_local_error_at_end_epoch_reaches_every_rank_at_once(tmp_path, case, message):
    out = str(tmp_path / "r")
    mp.start_processes(_worker, args=(_free_port(), case, out), nprocs=WORLD, join=True, start_method="spawn")
    for rank in range(WORLD):
        kind, seconds, text = Path(f"{out}.{rank}").read_text().split("\n", 2)
        assert kind == "ValueError" and message in text, (rank, kind, text)
        assert float(seconds) < PG_TIMEOUT_S / 4, (rank, seconds)  # raised, not timed out


@pytest.mark.slow
@pytest.mark.hostile("accepted", cls="distributed local errors")
def test_torchrun_resume_of_a_finished_run_ends_on_every_rank(tmp_path):
    pytest.importorskip("sklearn")
    args = [
        "--dataset",
        "digits",
        "--num-train",
        "120",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "-q",
    ]
    args += ["--device", "cpu", "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    first = subprocess.run(
        [*launch, "-m", "gwa.cli", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # The documented recovery command, run on a run whose last epoch is checkpointed: every rank must end.
    again = subprocess.run(
        [*launch, "-m", "gwa.cli", "train", *args, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("run directory:") == 1
