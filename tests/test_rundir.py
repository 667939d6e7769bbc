"""The run-directory contract: RunWriter and load_run round trip, versioning, resume and safety."""

import json
import math

import numpy as np
import pytest

import gwa
from gwa.rundir import (
    FORMAT,
    READABLE_FORMATS,
    Run,
    RunDirError,
    RunDirWarning,
    RunWriter,
    load_run,
    read_config,
    read_metrics,
)

N = 6


def write_run(path, epochs=3, **kwargs):
    labels = np.array([0, 1, 2, 0, 1, 2])
    writer = RunWriter(
        path,
        {"name": "demo", "lr": 0.1},
        N,
        labels=labels,
        clean_labels=[0, 1, 2, 0, 1, 1],
        noise_mask=[False] * 5 + [True],
        **kwargs,
    )
    for epoch in range(1, epochs + 1):
        scores = np.full(N, np.nan)
        scores[: epoch + 2] = np.linspace(-0.5, 0.5, epoch + 2)
        writer.log_epoch(
            {"epoch": epoch, "train_loss": 1.0 / epoch, "gwa": math.nan if epoch == 2 else 0.1 * epoch},
            scores={"alignment": scores, "loss": np.arange(N) * epoch},
        )
    return writer


def test_round_trip(tmp_path):
    writer = write_run(tmp_path / "run")
    writer.write_previews([5, 1], np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
    writer.write_summary({"criteria": {"paper": {"epoch": 3, "test_acc": 0.9}}})
    writer.finish()
    run = load_run(tmp_path / "run")
    assert isinstance(run, Run) and run.complete and run.name == "demo"
    assert run.config["format"] == FORMAT == 2 and run.config["gwa_version"] == gwa.__version__
    assert run.config["num_samples"] == N and run.config["lr"] == 0.1 and run.config["status"] == "complete"
    assert run.epochs == [1, 2, 3]
    np.testing.assert_array_equal(run.series("train_loss"), [1.0, 0.5, 1.0 / 3])
    np.testing.assert_array_equal(run.series("gwa"), [0.1, np.nan, 0.1 * 3])
    assert np.isnan(run.series("absent")).all()
    np.testing.assert_array_equal(run.labels, [0, 1, 2, 0, 1, 2])
    assert run.labels.dtype == np.int64 and run.noise_mask.dtype == bool
    np.testing.assert_array_equal(run.noise_mask, [False] * 5 + [True])
    np.testing.assert_array_equal(run.clean_labels, [0, 1, 2, 0, 1, 1])
    assert run.signals() == ["alignment", "loss"]
    s2 = run.scores(2)
    assert s2.dtype == np.float32
    np.testing.assert_array_equal(s2, np.r_[np.linspace(-0.5, 0.5, 4), np.nan, np.nan].astype(np.float32))
    np.testing.assert_array_equal(run.scores(3, "loss"), np.arange(N) * 3)
    matrix = run.score_matrix()
    assert matrix.shape == (3, N) and np.isnan(matrix[0, 3:]).all() and not np.isnan(matrix[2, :5]).any()
    # Written in the one RunSummary schema: the fields not given are there, null (or what the others imply).
    assert tuple(run.summary) == gwa.rundir.SUMMARY_KEYS
    assert run.summary["criteria"] == {"paper": {"epoch": 3, "test_acc": 0.9}}
    assert (run.summary["format"], run.summary["summary_format"], run.summary["default"]) == (2, 2, "gwa")
    assert (
        run.summary["best_epoch"] is None and run.summary["noise"] is None and run.summary["epochs_run"] == 0
    )
    np.testing.assert_array_equal(run.preview_ids, [5, 1])
    assert run.previews.shape == (2, 4, 4) and run.previews.dtype == np.uint8


def test_non_finite_metrics_are_written_as_null(tmp_path):
    writer = RunWriter(tmp_path, {"note": [np.float32(np.inf), {"x": np.nan}], "k": np.int64(3)}, 2)
    writer.log_epoch(
        {
            "epoch": np.int64(1),
            "gwa": math.inf,
            "mean": np.float32("nan"),
            "ok": np.bool_(True),
            "arr": np.array([1.0, np.nan]),
            "path": tmp_path,
        }
    )
    line = (tmp_path / "metrics.jsonl").read_text()
    row = json.loads(line)  # strict JSON: no NaN/Infinity tokens anywhere
    assert "NaN" not in line and "Infinity" not in line
    assert row == {
        "epoch": 1,
        "gwa": None,
        "mean": None,
        "ok": True,
        "arr": [1.0, None],
        "path": str(tmp_path),
    }
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["note"] == [None, {"x": None}] and config["k"] == 3


def test_summary_metrics_round_trip_through_the_run_directory(tmp_path):
    summary = gwa.summarize(np.r_[np.full(50, 0.9), np.full(50, -0.1)], n_undefined=2)
    row = summary.metrics()
    assert row["gwa_paper_flagged"] is True and row["gwa_guard"] == "kurtosis_pole"
    assert row["gwa_guard_message"].startswith("kurtosis pole: excess kurtosis -2")
    assert row["n_scores"] == 100 and row["n_undefined"] == 2
    assert row["align_mean"] == pytest.approx(0.4) and row["gwa_paper"] == pytest.approx(-0.5)
    assert row["gwa"] == pytest.approx(0.4)  # the default value: 0.4 / (-2 + 3)
    empty = gwa.summarize(np.array([])).metrics()
    assert empty["align_mean"] is None and empty["gwa"] is None and empty["gwa_paper"] is None
    assert empty["gwa_guard"] == "no_scores" and empty["gwa_guard_message"] == "no scores"
    json.dumps(empty, allow_nan=False)
    writer = RunWriter(tmp_path / "run", {}, N)
    writer.log_epoch({"epoch": 1, **row})
    writer.log_epoch({"epoch": 2, **empty})
    run = load_run(tmp_path / "run")
    assert run.metrics == [{"epoch": 1, **row}, {"epoch": 2, **empty}]  # format 2 rows are read as written


def test_refuses_to_overwrite_a_non_empty_directory(tmp_path):
    write_run(tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(
        RunDirError,
        match=r"is not empty; pass resume=True to continue it or overwrite=True "
        r"\(--resume / --overwrite on the command line\)",
    ):
        RunWriter(tmp_path / "run", {}, N)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing lost
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="is not empty"):
        RunWriter(tmp_path / "other", {}, N)
    RunWriter(tmp_path / "empty_but_existing", {}, N)  # an empty or new directory is fine


def test_overwrite_removes_the_previous_runs_results(tmp_path):
    path = tmp_path / "run"
    first = write_run(path)
    first.write_previews([0], np.zeros((1, 8)))
    first.write_summary({"criteria": {}})
    RunWriter(path, {"name": "second"}, N, overwrite=True)
    run = load_run(path)
    assert run.name == "second" and run.metrics == [] and run.summary is None and run.signals() == []
    # Labels and noise masks of the previous run must not be read as this run's.
    assert run.labels is None and run.noise_mask is None and run.clean_labels is None and run.previews is None
    assert run.score_matrix().shape == (0, N)


def test_resume_truncates_later_epochs(tmp_path):
    path = tmp_path / "run"
    write_run(path, epochs=4)
    writer = RunWriter(path, {"name": "demo"}, N, resume=True, resume_epoch=2)
    run = load_run(path)
    assert run.epochs == [1, 2] and not run.complete
    assert sorted(f.name for f in (path / "scores").iterdir()) == [
        "alignment_0001.npy",
        "alignment_0002.npy",
        "loss_0001.npy",
        "loss_0002.npy",
    ]
    writer.log_epoch({"epoch": 3, "train_loss": 9.0}, scores={"alignment": np.zeros(N)})
    run = load_run(path)
    assert run.epochs == [1, 2, 3] and run.series("train_loss")[2] == 9.0
    np.testing.assert_array_equal(run.labels, [0, 1, 2, 0, 1, 2])  # kept from the first session


def test_resume_without_an_epoch_keeps_everything(tmp_path):
    path = tmp_path / "run"
    write_run(path, epochs=3)
    RunWriter(path, {"name": "demo"}, N, resume=True)
    assert load_run(path).epochs == [1, 2, 3]


def test_torn_last_metrics_line_is_ignored_and_dropped_on_resume(tmp_path):
    path = tmp_path / "run"
    write_run(path, epochs=2)
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "train_lo')  # interrupted write: no closing brace, no newline
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    with pytest.warns(RunDirWarning, match="2 of 3 epochs readable; line 3: torn by an interrupted write"):
        assert load_run(path).epochs == [1, 2]
    # Resuming must not append epoch 3 to the torn line (which would hide it and every later epoch).
    writer = RunWriter(path, {"name": "demo"}, N, resume=True)
    writer.log_epoch({"epoch": 3, "train_loss": 0.25})
    writer.log_epoch({"epoch": 4, "train_loss": 0.2})
    assert load_run(path).epochs == [1, 2, 3, 4]


def test_resume_removes_an_interrupted_score_write(tmp_path):
    path = tmp_path / "run"
    write_run(path, epochs=2)
    np.save(
        path / "scores" / "alignment_0003.npy.tmp.npy", np.zeros(N, np.float32)
    )  # crash before the rename
    RunWriter(path, {"name": "demo"}, N, resume=True, resume_epoch=2)
    assert load_run(path).signals() == ["alignment", "loss"]
    assert not list((path / "scores").glob("*.tmp.npy"))


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(RunDirError, match=r"Cannot resume: .* holds no run \(no config.json\)"):
        RunWriter(tmp_path / "nothing", {}, N, resume=True)


def test_format_version_error(tmp_path):
    write_run(tmp_path / "run", epochs=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["format"] = 99
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert READABLE_FORMATS == (1, 2)
    message = (
        r"has run-directory format 99; this gwa reads formats 1, 2\. Re-run it with this version, or read it "
        rf"with the gwa that wrote it \({gwa.__version__}\)"
    )
    with pytest.raises(RunDirError, match=message):
        load_run(tmp_path / "run")
    with pytest.raises(RunDirError, match=message):
        RunWriter(tmp_path / "run", {}, N, resume=True)


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(RunDirError, match=r"Run directory .*nope does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(RunDirError, match=r"bare is not a gwa run directory: no config.json"):
        load_run(tmp_path / "bare")
    with pytest.raises(RunDirError, match="no config.json"):
        read_config(tmp_path / "bare")
    assert issubclass(RunDirError, ValueError)


def test_config_cannot_clobber_the_contract_keys(tmp_path):
    writer = RunWriter(tmp_path / "run", {"format": "png", "status": "mine", "num_samples": 3, "lr": 1.0}, N)
    writer.finish()
    run = load_run(tmp_path / "run")
    assert list(run.config)[:4] == ["format", "gwa_version", "status", "num_samples"]
    assert (run.config["format"], run.config["status"], run.config["num_samples"]) == (2, "complete", N)
    assert run.config["lr"] == 1.0 and run.complete


def test_missing_scores_error(tmp_path):
    write_run(tmp_path / "run", epochs=1)
    with pytest.raises(RunDirError, match=r"has no 'alignment' scores for epoch 7 \(alignment_0007.npy\)"):
        load_run(tmp_path / "run").scores(7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.zeros(N + 1)}, rf"`labels` of shape \({N},\); got shape=\({N + 1},\)"),
        ({"clean_labels": np.zeros((N, 1))}, rf"`clean_labels` of shape \({N},\); got shape=\({N}, 1\)"),
        ({"noise_mask": np.zeros(2, bool)}, rf"`noise_mask` of shape \({N},\); got shape=\(2,\)"),
    ],
)
def test_array_shape_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunWriter(tmp_path / "run", {}, N, **kwargs)


def test_num_samples_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"`num_samples` > 0; got 0"):
        RunWriter(tmp_path / "run", {}, 0)


def test_log_epoch_errors(tmp_path):
    writer = RunWriter(tmp_path / "run", {}, N)
    for epoch in (0, -1, 1.0, "1", None):
        with pytest.raises(ValueError, match=rf"`metrics\['epoch'\]` to be an integer >= 1; got {epoch!r}"):
            writer.log_epoch({"epoch": epoch})
    with pytest.raises(
        ValueError,
        match=rf"scores\['alignment'\] of shape \({N},\) indexed by sample id; "
        rf"got shape=\({N - 1},\)",
    ):
        writer.log_epoch({"epoch": 1}, scores={"alignment": np.zeros(N - 1)})
    assert read_metrics(tmp_path / "run") == []  # a failed call wrote no metrics row


@pytest.mark.parametrize(
    ("ids", "inputs"),
    [([0, 1], np.zeros((2, 5))), ([0], np.zeros((1, 3, 3))), ([0, 1], np.zeros((2, 3, 3, 3)))],
)
def test_previews_accept_signals_and_images(tmp_path, ids, inputs):
    writer = RunWriter(tmp_path / "run", {}, N)
    writer.write_previews(ids, inputs)
    run = load_run(tmp_path / "run")
    assert run.previews.shape == inputs.shape and run.preview_ids.tolist() == ids


@pytest.mark.parametrize(
    ("ids", "inputs"),
    [
        ([0, 1], np.zeros(2)),
        ([0, 1], np.zeros((3, 5))),
        ([[0, 1]], np.zeros((1, 5))),
        ([0], np.zeros((1, 2, 2, 3, 1))),
    ],
)
def test_preview_shape_errors(tmp_path, ids, inputs):
    writer = RunWriter(tmp_path / "run", {}, N)
    with pytest.raises(
        ValueError,
        match=r"`sample_ids` \(K,\) and `inputs` \(K, L\), \(K, H, W\) or \(K, H, W, 3\); "
        r"got \(",
    ):
        writer.write_previews(ids, inputs)


# ----------------------------------------------------------------------------- safety: overwrite, lock, atomic


@pytest.mark.hostile("refused")
def test_overwrite_refuses_a_folder_that_is_not_a_gwa_run(tmp_path):
    path = tmp_path / "project"
    mine = {
        "checkpoints/my_resnet_epoch90.pt": "weights",
        "checkpoints/last.pt": "my own last",
        "notes.txt": "x",
        "labels.npy": "labels",
        "config.json": '{"lr": 0.1}',
        "scores/alignment_0001.npy": "scores",
    }
    for name, text in mine.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    with pytest.raises(
        RunDirError,
        match=r"Refusing to overwrite .*project: it is not a gwa run \(no config.json with "
        r"format and gwa_version\).*would delete checkpoints/last\.pt, config\.json, "
        r"labels\.npy, scores/alignment_0001\.npy",
    ):
        RunWriter(path, {}, N, overwrite=True)
    assert {name: (path / name).read_text() for name in mine} == mine  # nothing touched


def test_overwrite_deletes_only_what_gwa_wrote(tmp_path):
    path = tmp_path / "run"
    write_run(path)
    (path / "checkpoints").mkdir()
    for name in ("last-0002.pt", "last.json", "best_gwa-0001.pt", "best_gwa.json", "my_model.pt"):
        (path / "checkpoints" / name).write_text("x")
    (path / "notes.txt").write_text("mine")
    (path / "scores" / "my_scores.csv").write_text("mine")
    RunWriter(path, {"name": "second"}, N, overwrite=True).close()
    assert sorted(p.name for p in (path / "checkpoints").iterdir()) == ["my_model.pt"]
    assert (path / "notes.txt").read_text() == "mine" and (path / "scores" / "my_scores.csv").exists()
    assert read_config(path)["name"] == "second"


def test_a_folder_left_by_a_run_killed_before_its_first_commit_counts_as_empty(tmp_path):
    path = tmp_path / "run"
    (path / "scores").mkdir(parents=True)
    (path / "gwa.lock").write_text("123\n")
    (path / "config.json.tmp").write_text('{"form')
    RunWriter(path, {"name": "fresh"}, N).close()
    assert read_config(path)["name"] == "fresh" and not (path / "config.json.tmp").exists()


_HOLD = """
import sys, time
from gwa.rundir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.hostile("refused")
def test_a_second_writer_is_refused_and_named_until_the_first_dies(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(
            RunDirError,
            match=rf"Run directory .*run is being written by another process "
            rf"\(pid {holder.pid}, holding .*gwa\.lock\)",
        ):
            RunWriter(path, {}, N, overwrite=True)
        assert not (path / "config.json").exists()  # the refused writer wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunWriter(path, {}, N).close()  # a killed writer leaves no stale lock


def test_a_writer_in_the_same_process_takes_over_and_the_old_one_stops(tmp_path):
    path = tmp_path / "run"
    old = RunWriter(path, {}, N)
    new = RunWriter(path, {"name": "new"}, N, overwrite=True)
    with pytest.raises(
        RunDirError, match="no longer holds .*run: a later writer in this process took it over"
    ):
        old.log_epoch({"epoch": 1})
    new.log_epoch({"epoch": 1})
    new.finish()
    with pytest.raises(RunDirError, match="no longer holds .*run: it was closed"):
        new.log_epoch({"epoch": 2})
    assert read_metrics(path) == [{"epoch": 1}]


def test_log_epoch_refuses_an_epoch_already_logged(tmp_path):
    writer = RunWriter(tmp_path / "run", {}, N)
    writer.log_epoch({"epoch": 2})
    with pytest.raises(ValueError, match=r"`metrics\['epoch'\]` after the last logged epoch 2; got 2"):
        writer.log_epoch({"epoch": 2})
    assert read_metrics(tmp_path / "run") == [{"epoch": 2}]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    import errno

    from gwa.rundir import write_atomic

    target = tmp_path / "f.json"
    target.write_text("old")

    def full(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, full)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_metrics_are_never_torn_by_the_writer(tmp_path, monkeypatch):
    """metrics.jsonl is replaced whole: a failure while writing an epoch leaves the previous rows intact."""
    from gwa.rundir import _atomic

    writer = RunWriter(tmp_path / "run", {}, N)
    writer.log_epoch({"epoch": 1, "gwa": 0.5})

    def fail():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic, "_fault_point", fail)
    with pytest.raises(OSError, match="No space left on device"):
        writer.log_epoch({"epoch": 2, "gwa": 0.6})
    monkeypatch.undo()
    assert read_metrics(tmp_path / "run") == [{"epoch": 1, "gwa": 0.5}]
    writer.log_epoch({"epoch": 2, "gwa": 0.6})  # the failed epoch can be logged again
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]


# ------------------------------------------------------------------------------------------ summary.json schema

# gwa 0.2's two shapes of summary.json: the callbacks' (EpochMonitor) and gwa train's.
SUMMARY_0_2_CALLBACK = {
    "format": 2,
    "criteria": {"gwa": {"epoch": 2}, "last": {"epoch": 3}},
    "monitor": "gwa_paper",
    "best_epoch": 2,
    "stopped_epoch": None,
    "decision": "epoch 3: no new best",
    "diagnostics": [],
    "best_model_dir": "out/gwa-best",
}
SUMMARY_0_2_TRAIN = {
    "format": 2,
    "default": "gwa",
    "criteria": {"gwa": {"epoch": 2, "test_acc": 0.8}},
    "epochs_run": 3,
    "epochs_planned": 5,
    "final_test_acc": 0.7,
    "best_checkpoint": {"epoch": 2, "backend": "torch", "file": "best_gwa-0002.pt"},
    "diagnostics": [],
    "num_samples": 6,
    "realised_noise_rate": 0.25,
    "noise": {"kind": "symmetric", "rate_requested": 0.2, "rate_actual": 0.25, "num_noisy": 2},
}


@pytest.mark.parametrize("old", [SUMMARY_0_2_CALLBACK, SUMMARY_0_2_TRAIN], ids=["callback", "gwa train"])
def test_a_0_2_summary_is_upgraded_on_read(tmp_path, old):
    write_run(tmp_path / "run").finish()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(old))
    summary = load_run(tmp_path / "run").summary
    assert (
        tuple(summary) == gwa.rundir.SUMMARY_KEYS and summary["summary_format"] == gwa.rundir.SUMMARY_FORMAT
    )
    for key, value in old.items():  # what the old shape said is kept, under the same key
        if key != "noise":
            assert summary[key] == value, key
    assert summary["default"] == "gwa" and summary["epochs_run"] == old.get("epochs_run", 3)
    if "monitor" in old:  # the callback's: what only gwa train knows is null
        assert (
            summary["best_epoch"] == 2 and summary["noise"] is None and summary["realised_noise_rate"] is None
        )
        assert summary["epochs_planned"] is None and summary["best_checkpoint"] is None
    else:  # gwa train's: the monitor was the default, its choice the kept epoch; the noise rate once
        assert summary["monitor"] == "gwa" and summary["best_epoch"] == 2 and summary["decision"] is None
        assert summary["noise"] == {"kind": "symmetric", "rate_requested": 0.2, "num_noisy": 2}
        assert summary["realised_noise_rate"] == 0.25 and summary["best_model_dir"] is None


def test_write_summary_refuses_a_key_outside_the_schema(tmp_path):
    writer = write_run(tmp_path / "run")
    with pytest.raises(
        ValueError, match=r"Expected summary.json's keys among the RunSummary fields .*got 'acc'"
    ):
        writer.write_summary({"criteria": {}, "acc": 0.9})
    assert not (tmp_path / "run" / "summary.json").exists()
    written = writer.write_summary({"criteria": {"gwa": {"epoch": 3}}, "monitor": "align_mean"})
    assert written["best_epoch"] is None  # the monitor chose nothing in criteria: no epoch is implied
    assert gwa.rundir.run_summary({"criteria": {"gwa": {"epoch": 3}}})["best_epoch"] == 3
