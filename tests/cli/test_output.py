"""What the command line prints: one line per epoch of ``gwa train`` in a log, ``-q``, and the wording of
``gwa compare`` and ``gwa flag`` where a run lacks what a number needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import gwa
from gwa.rundir import RunWriter
from gwa.runner.loop import epoch_line


def test_epoch_line_has_loss_accuracies_gwa_and_the_decision():
    row = {"epoch": 3, "train_loss": 0.41234, "train_acc": 0.8721, "test_acc": 0.851, "gwa": 0.0231}
    line = epoch_line(row, total_epochs=20, decision="epoch 3: new best (gwa 0.0231)")
    assert (
        line == "epoch  3/20  loss 0.4123  train acc 87.2%  test acc 85.1%  gwa 0.0231  new best (gwa 0.0231)"
    )
    row = {"epoch": 12, "train_loss": None, "gwa": None, "val_acc": 0.5}
    stop = "stop at epoch 12: no new best for 2 epochs since epoch 10 (gwa 0.03)"
    assert epoch_line(row, total_epochs=12, decision=stop) == (
        f"epoch 12/12  loss –  train acc –  val acc 50.0%  gwa –  {stop}"
    )


def _train(tmp_path, *extra):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    argv = [
        sys.executable,
        "-m",
        "gwa.cli",
        "train",
        "--dataset",
        "digits",
        "--num-train",
        "200",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--early-stop",
        "5",
        "--out",
        str(tmp_path / "run"),
        "--overwrite",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # stdout and stderr are pipes, as under nohup, SLURM or CI: no terminal, no progress bar.
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=True)


@pytest.mark.slow  # `gwa train` end to end in a subprocess
def test_train_prints_one_line_per_epoch_when_not_in_a_terminal(tmp_path):
    done = _train(tmp_path)
    lines = done.stderr.splitlines()
    assert [
        int(
            re.match(r"epoch (\d)/3  loss \d\.\d{4}  train acc [\d.]+%  test acc [\d.]+%  gwa ", line).group(
                1
            )
        )
        for line in lines
    ] == [1, 2, 3]
    assert "warm-up" in lines[0] or "new best" in lines[0]
    assert "run directory:" in done.stdout and "gwa " in done.stdout


@pytest.mark.slow  # `gwa train` end to end in a subprocess
def test_quiet_hides_the_epoch_lines_but_not_the_summary(tmp_path):
    done = _train(tmp_path, "-q")
    assert done.stderr == ""
    assert "run directory:" in done.stdout and re.search(r"gwa\s+epoch\s+\d", done.stdout)


def _run(path, *, test_acc: bool, noise_mask=None, n=40, epochs=4, seed=0):
    rng = np.random.default_rng(seed)
    writer = RunWriter(path, {"name": path.name}, n, labels=rng.integers(0, 3, n), noise_mask=noise_mask)
    for e in range(1, epochs + 1):
        scores = np.clip(0.1 * e + rng.normal(0, 0.2, n), -1, 1)
        row = {"epoch": e, **gwa.summarize(scores).metrics()}
        if test_acc:
            row["test_acc"] = 0.5 + 0.05 * e
        writer.log_epoch(row, {"alignment": scores})
    writer.finish()
    return path


def test_compare_says_how_many_runs_have_what_a_correlation_needs(tmp_path, capsys):
    from gwa.cli import main

    runs = [
        _run(tmp_path / "a", test_acc=True),
        _run(tmp_path / "b", test_acc=False, seed=1),
        _run(tmp_path / "c", test_acc=False, seed=2),
    ]
    assert main(["compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert (
        "Rank correlations need at least 3 runs with both a mean alignment and a test accuracy; 1 of the 3 "
        "run(s) have both."
    ) in out


def test_flag_on_a_clean_run_says_precision_is_undefined(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from gwa.cli import main
    from gwa.report import flag_samples

    clean = _run(tmp_path / "clean", test_acc=False, noise_mask=np.zeros(40, bool))
    result = flag_samples(clean, top=5)
    assert result.precision is None and result.recall is None and result.flagged.sum() == 5
    assert main(["flag", str(clean), "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "marks no flipped label (a clean run): precision and recall are not defined" in out
    assert "precision 0.000" not in out
    no_mask = _run(tmp_path / "real", test_acc=False)
    assert main(["flag", str(no_mask)]) == 0
    assert "no noise mask in the run (which labels are wrong is not known)" in capsys.readouterr().out
