"""The hostile-input suite, ``gwa train --resume`` on shared and damaged runs: a changed dataset, malformed
checkpoints, a longer plan, SIGKILL at random moments (torch and JAX backends), and torch.distributed resume
and rank-local errors (issue 20, items 5 and 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from gwa import rundir

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

SMALL = ["--num-train", "100", "--hidden", "8", "--signals", "", "-q"]


def _main(*argv):
    from gwa.cli import main

    return main(["train", *argv])


def _snapshot(path) -> dict:
    """Every file of a run and its bytes, but the lock (a refused resume may take the lock and say its pid)."""
    return {
        str(f.relative_to(path)): f.read_bytes()
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != rundir.LOCK_FILE
    }


# ------------------------------------------------------------------------------------------------ changed data


def _image_folder(root, moved=(), added=0):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class + (added if split == "train" and cls == "a" else 0)):
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(root / split / cls / f"{i:02d}.png")
    for name in moved:  # the same image files, now in the other class
        (root / "train" / "a" / name).rename(root / "train" / "b" / f"moved_{name}")


@pytest.mark.hostile("refused", cls="changed data")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moved": ("03.png", "07.png")}, "the training labels (2 of 24 samples)"),
        ({"added": 2}, "the number of training samples (24 then, 26 now)"),
    ],
)
def test_resume_on_a_changed_dataset_is_refused_and_leaves_the_run_untouched(
    tmp_path, capsys, change, message
):
    pytest.importorskip("PIL")
    data, out = tmp_path / "data", tmp_path / "run"
    args = ["--dataset", "imagefolder", "--data-dir", str(data), "--hidden", "8", "--out", str(out), "-q"]
    _image_folder(data)
    assert _main(*args, "--epochs", "1") == 0
    before = _snapshot(out)
    for split in ("train", "test"):  # the colleague's folder changed since
        for f in (data / split).rglob("*.png"):
            f.unlink()
    _image_folder(data, **change)
    capsys.readouterr()
    assert _main(*args, "--epochs", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"Cannot resume {out}: the dataset changed" in err and message in err
    assert _snapshot(out) == before


@pytest.mark.hostile("accepted", cls="changed data")
def test_resume_on_the_same_data_records_and_checks_its_fingerprint(tmp_path):
    out = tmp_path / "run"
    assert _main("--dataset", "digits", *SMALL, "--epochs", "1", "--out", str(out)) == 0
    fingerprint = rundir.read_config(out)["data_fingerprint"]
    assert fingerprint["num_samples"] == 100 and len(fingerprint["labels_sha256"]) == 64
    assert _main("--dataset", "digits", *SMALL, "--epochs", "2", "--out", str(out), "--resume") == 0
    assert rundir.read_config(out)["data_fingerprint"] == fingerprint
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]


# ----------------------------------------------------------------------------------------- malformed checkpoints


def _damage_drop_optimizer(state):
    del state["optimizer"]
    return state


def _damage_wrong_shape(state):
    state["model"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state["model"].items()}
    return state


def _damage_rng(state):
    state["rng"]["python"] = (1, (), None)
    return state


@pytest.mark.hostile("refused", cls="odd values")
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_damage_drop_optimizer, "the checkpoint has no 'optimizer' entry"),
        (lambda state: [state], "the checkpoint does not fit this run (TypeError"),
        (_damage_wrong_shape, "the checkpoint does not fit this run (RuntimeError"),
        (_damage_rng, "the checkpoint does not fit this run (ValueError"),
    ],
    ids=["no-optimizer", "a-list", "other-shapes", "rng-layout"],
)
def test_resume_from_a_malformed_checkpoint_is_one_line_naming_it(tmp_path, capsys, damage, message):
    from gwa.runner import checkpoint

    out = tmp_path / "run"
    assert _main("--dataset", "digits", *SMALL, "--epochs", "1", "--out", str(out)) == 0
    last = checkpoint.marked_file(out, "last")
    torch.save(damage(torch.load(last, weights_only=True)), last)
    capsys.readouterr()
    assert _main("--dataset", "digits", *SMALL, "--epochs", "2", "--out", str(out), "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"Cannot resume from {last}: {message}" in err


# ------------------------------------------------------------------------------------------------ a longer plan


@pytest.mark.hostile("accepted", cls="crash windows")
def test_a_best_checkpoint_chosen_under_another_plan_is_marked_stale(tmp_path, capsys):
    from gwa.runner import checkpoint
    from gwa.runner import summary as train_summary
    from gwa.runner.config import RunConfig

    out = tmp_path / "run"
    assert _main("--dataset", "digits", *SMALL, "--epochs", "3", "--out", str(out)) == 0
    rows = rundir.read_metrics(out)
    config = RunConfig.from_dict(rundir.read_config(out))
    data = types.SimpleNamespace(
        num_samples=100,
        noise_mask=np.zeros(100, bool),
        realised_noise_rate=0.0,
        classes=[str(k) for k in range(10)],
    )
    chosen = rundir.load_run(out).summary["criteria"]["gwa"]["epoch"]
    other = 1 if chosen != 1 else 2  # what a resume with a longer plan leaves: the old plan's best
    checkpoint.mark(out, "best_gwa", epoch=other, backend="torch", file=f"best_gwa-{other:04d}.pt")
    summary = {**rundir.load_run(out).summary, **train_summary.summary_fields(rows, config, data, out)}
    assert summary["best_checkpoint"]["stale"] is True
    assert (
        f"holds epoch {other}, but the default criterion now chooses epoch {chosen}"
        in (summary["best_checkpoint"]["note"])
    )
    rundir.write_json_atomic(out / "summary.json", summary)
    capsys.readouterr()
    train_summary.print_summary(out)
    assert "warning: the best checkpoint holds epoch" in capsys.readouterr().out


# --------------------------------------------------------------------------------- SIGKILL at random moments

KILL_ARGS = [
    "--dataset",
    "digits",
    "--num-train",
    "300",
    "--hidden",
    "16",
    "--epochs",
    "4",
    "--signals",
    "loss",
]
HOW = ("resume", "overwrite", "quiet", "out")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _spawn(out, *extra):
    cmd = [sys.executable, "-m", "gwa.cli", "train", *KILL_ARGS, "-q", "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _logged(out) -> int:
    try:
        return len(rundir.scan_metrics(out).rows)
    except (OSError, rundir.RunDirError):  # between the writer's rename and our read: try again
        return -1


def _phase_seconds(out, *extra) -> list[float]:
    """An uninterrupted run's phases: from its first commit (config.json) to epoch 1's row, from each epoch's
    row to the next, and from the last row to the end of the process (summary, previews, the final commit)."""
    proc = _spawn(out, *extra)
    marks = []
    while proc.poll() is None:
        if (out / "config.json").exists() and _logged(out) >= len(marks):
            marks.append(time.monotonic())
        time.sleep(0.002)
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    marks.append(time.monotonic())
    return list(np.diff(marks))


def _contents(path) -> dict:
    from gwa.runner import checkpoint

    config = {k: v for k, v in rundir.read_config(path).items() if k not in HOW}
    metrics = [{k: v for k, v in r.items() if k != "wall_time"} for r in rundir.read_metrics(path)]
    return {
        "config": config,
        "metrics": metrics,
        "summary": json.loads((path / "summary.json").read_text()),
        "arrays": {str(f.relative_to(path)): np.load(f).tobytes() for f in sorted(path.rglob("*.npy"))},
        "last": checkpoint.marked_file(path, "last").name,
        "files": sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()),
    }


def _kill_anywhere_then_resume(tmp_path, backend_args, kills, seed):
    """Kill ``gwa train`` at ``kills`` random moments: each in a phase of its own (the run up to epoch 1's row,
    an epoch, or the end after the last row), at a uniformly random time within that phase as long as the
    uninterrupted run's, so the kills land anywhere, not only at gwa's write points. Then ``--resume``."""
    reference = tmp_path / "ref"
    phases = _phase_seconds(reference, *backend_args)
    expected = _contents(reference)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(phases))[:kills])
    for k, phase in enumerate(chosen):
        out = tmp_path / f"kill{k}"
        delay = rng.uniform(0, phases[phase])
        proc = _spawn(out, *backend_args)
        while proc.poll() is None and not ((out / "config.json").exists() and _logged(out) >= phase):
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        ended = proc.wait(timeout=60)
        print(
            f"kill {k}: {delay:.3f} s into phase {phase} (of {phases[phase]:.3f} s), {_logged(out)} epoch(s) "
            f"logged, {'SIGKILLed' if ended == -signal.SIGKILL else 'had already ended'}"
        )
        resumed = subprocess.run(
            [sys.executable, "-m", "gwa.cli", "train", *KILL_ARGS, "-q", "--out", str(out), "--resume"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, (phase, delay, resumed.stderr[-2000:])
        assert _contents(out) == expected, f"killed {delay:.3f} s into phase {phase}"
        assert not list(out.rglob("*.tmp")), (phase, delay)


@pytest.mark.slow
@pytest.mark.hostile("accepted", cls="crash windows")
def test_sigkill_at_random_moments_then_resume_equals_the_uninterrupted_run_torch(tmp_path):
    _kill_anywhere_then_resume(tmp_path, [], kills=5, seed=20)


@pytest.mark.slow
@pytest.mark.hostile("accepted", cls="crash windows")
def test_sigkill_at_random_moments_then_resume_equals_the_uninterrupted_run_jax(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    _kill_anywhere_then_resume(tmp_path, ["--backend", "jax"], kills=3, seed=21)
