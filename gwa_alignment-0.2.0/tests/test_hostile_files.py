"""The hostile-input suite, files part: crafted pickles for every loader, corrupt and foreign run directories,
and command-line errors a user can cause. See docs/reliability.md for the promises these tests hold gwa to.

A crafted pickle here runs ``echo pwned > MARKER`` when unpickled; every refusal test checks both that the error
names the file and that MARKER was never written.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shlex
import types

import numpy as np
import pytest

from gwa import GuardCode, rundir
from gwa.rundir import RunDirError, RunDirWarning, RunWriter, _atomic, load_run

torch = pytest.importorskip("torch")

N = 6


class Payload:
    """Unpickling this runs a shell command that writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > {shlex.quote(self.marker)}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "the crafted file's payload ran"


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """The control: without gwa's guards the crafted files used below do execute code."""
    target = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(target)))
    assert target.read_text() == "pwned\n"
    torch.save({"x": Payload(tmp_path / "control2")}, tmp_path / "c.pt")
    torch.load(tmp_path / "c.pt", weights_only=False)
    assert (tmp_path / "control2").exists()


# ------------------------------------------------------------------------------------------- --noise-file


@pytest.mark.hostile("refused")
@pytest.mark.parametrize("where", ["value", "key", "top"])
def test_noise_file_pt_with_a_payload_is_refused(tmp_path, marker, where):
    from gwa.runner import noise

    obj = {
        "value": {"aggre_label": Payload(marker)},
        "key": {Payload(marker): np.zeros(3, np.int64)},
        "top": Payload(marker),
    }[where]
    torch.save(obj, tmp_path / "CIFAR-10_human.pt")
    with pytest.raises(
        ValueError, match=r"Refusing to read .*CIFAR-10_human\.pt: expected tensors, numeric numpy"
    ):
        noise.load_label_file(tmp_path / "CIFAR-10_human.pt", key="aggre_label")


@pytest.mark.hostile("accepted")
@pytest.mark.parametrize("numpy_module", ["numpy._core", "numpy.core"])
def test_noise_file_pt_of_numpy_label_arrays_loads(tmp_path, numpy_module):
    """CIFAR-10-N's file is a dict of int64 numpy arrays, pickled by numpy 1.x (numpy.core) or 2.x."""
    from gwa.runner import noise

    labels = {"aggre_label": np.arange(10) % 3, "worse_label": np.arange(10)[::-1].copy() % 4}
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save(labels, path, _use_new_zipfile_serialization=False)  # protocol 2: module names are plain text
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", f"{numpy_module}.multiarray\n".encode()))
    np.testing.assert_array_equal(noise.load_label_file(path, key="worse_label"), labels["worse_label"])


@pytest.mark.hostile("refused")
def test_noise_file_pt_with_an_object_array_is_refused(tmp_path, marker):
    from gwa.runner import noise

    torch.save({"aggre_label": np.array([Payload(marker)], dtype=object)}, tmp_path / "h.pt")
    with pytest.raises(ValueError, match=r"Refusing to read .*h\.pt"):
        noise.load_label_file(tmp_path / "h.pt", key="aggre_label")


@pytest.mark.hostile("refused")
def test_noise_file_npy_with_an_object_array_is_refused(tmp_path, marker):
    from gwa.runner import noise

    np.save(tmp_path / "labels.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"Cannot read label file .*labels\.npy as a numeric \.npy array"):
        noise.load_label_file(tmp_path / "labels.npy")


@pytest.mark.hostile("refused")
def test_cli_noise_file_with_a_payload_is_one_line(tmp_path, marker, capsys):
    from gwa.cli import main

    torch.save({"aggre_label": Payload(marker)}, tmp_path / "evil.pt")
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--num-train",
            "100",
            "--epochs",
            "1",
            "--noise",
            "file",
            "--noise-file",
            str(tmp_path / "evil.pt"),
            "--noise-key",
            "aggre_label",
            "--out",
            str(tmp_path / "run"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Refusing to read" in err and "evil.pt" in err
    assert not (tmp_path / "run").exists()  # nothing was written for a run that could not start


# ------------------------------------------------------------------------------------------- CIFAR-10 batches


def _cifar_dir(tmp_path, batch_of, protocol=pickle.HIGHEST_PROTOCOL):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        plain = {
            "batch_label": "b",
            "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
            "labels": [1, 2],
            "filenames": [b"a.png", b"b.png"],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch_of(name, plain), fh, protocol=protocol)
    return folder


@pytest.mark.hostile("refused")
@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("where", ["whole", "data", "labels"])
def test_cifar10_batch_with_a_payload_is_refused(tmp_path, marker, protocol, where):
    from gwa.runner import data

    def batch_of(name, plain):
        if name != "data_batch_3":
            return plain
        return Payload(marker) if where == "whole" else {**plain, where: Payload(marker)}

    _cifar_dir(tmp_path, batch_of, protocol)
    with pytest.raises(
        ValueError,
        match=r"Refusing to read .*data_batch_3: expected a pickle of plain data and "
        r"numeric numpy arrays; it names posix\.system",
    ):
        data.load_cifar10(tmp_path)


@pytest.mark.hostile("refused")
def test_cifar10_batch_of_another_shape_is_a_clear_error(tmp_path):
    from gwa.runner import data

    _cifar_dir(tmp_path, lambda name, plain: [1, 2] if name == "test_batch" else plain)
    with pytest.raises(
        ValueError,
        match=r"Expected .*test_batch to hold a CIFAR-10 batch \(a dict with 'data' and "
        r"'labels'\); got list",
    ):
        data.load_cifar10(tmp_path)


@pytest.mark.hostile("accepted")
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batches_of_numpy_1_and_2_load(tmp_path, protocol):
    from gwa.runner import data

    folder = _cifar_dir(tmp_path, lambda name, plain: plain, protocol)
    if protocol == 2:  # what the official files (numpy 1.x) name
        for f in folder.iterdir():
            f.write_bytes(f.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    ds = data.load_cifar10(tmp_path)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.y_train.tolist() == [1, 2] * 5


# ------------------------------------------------------------------------------------ checkpoints and resume


def _train(tmp_path, *extra):
    from gwa.cli import main

    return main(
        [
            "train",
            "--dataset",
            "digits",
            "--num-train",
            "100",
            "--hidden",
            "8",
            "--signals",
            "",
            "--out",
            str(tmp_path / "run"),
            "-q",
            *extra,
        ]
    )


@pytest.fixture
def small_run(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "1") == 0
    capsys.readouterr()
    return tmp_path / "run"


@pytest.mark.hostile("refused")
@pytest.mark.parametrize("legacy_name", [False, True])
def test_resume_from_a_crafted_checkpoint_is_refused(tmp_path, small_run, marker, capsys, legacy_name):
    from gwa.runner import checkpoint

    last = checkpoint.marked_file(small_run, "last")
    if legacy_name:  # a run directory of an older gwa: checkpoints/last.pt
        last = last.with_name("last.pt")
        checkpoint.mark(small_run, "last", epoch=1, backend="torch", file="last.pt")
    torch.save({"epoch": 1, "model": Payload(marker)}, last)
    code = _train(tmp_path, "--resume", "--epochs", "2")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"Refusing to load {last}" in err


@pytest.mark.hostile("refused")
def test_checkpoint_mark_cannot_point_outside_the_run(tmp_path, small_run, marker, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model": Payload(marker)}, evil)
    (small_run / "checkpoints" / "last.json").write_text(
        json.dumps({"epoch": 1, "backend": "torch", "file": "../../evil.pt"})
    )
    code = _train(tmp_path, "--resume", "--epochs", "2")
    err = capsys.readouterr().err
    assert code == 2 and "last.json: expected {'epoch': int >= 1, 'backend': str, 'file': a file name" in err


@pytest.mark.hostile("refused")
def test_init_checkpoint_with_a_payload_is_refused(tmp_path, marker, capsys):
    torch.save({"model": Payload(marker)}, tmp_path / "init.pt")
    code = _train(tmp_path, "--epochs", "1", "--init-checkpoint", str(tmp_path / "init.pt"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"Refusing to load {tmp_path / 'init.pt'}" in err


@pytest.mark.hostile("refused")
def test_huggingface_callback_state_with_a_payload_is_refused(tmp_path, marker):
    pytest.importorskip("transformers")
    from gwa.integrations.huggingface import GWATrainerCallback

    folder = tmp_path / "hf" / "checkpoint-5"
    folder.mkdir(parents=True)
    torch.save(Payload(marker), folder / "gwa_callback_rank0.pt")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 3)

        def forward(self, x, labels=None):
            return self.classifier(x)

    callback = GWATrainerCallback(num_samples=10)
    with pytest.raises(ValueError, match=r"refusing to load .*checkpoint-5/gwa_callback_rank0\.pt"):
        callback.on_train_begin(
            types.SimpleNamespace(output_dir=str(tmp_path / "hf"), process_index=0),
            types.SimpleNamespace(global_step=5, num_train_epochs=3, is_world_process_zero=True),
            None,
            model=Model(),
        )


@pytest.mark.hostile("refused")
def test_eval_set_npz_with_object_arrays_is_refused(tmp_path, marker):
    from gwa.runner import data

    np.savez(tmp_path / "evil.npz", x=np.array([Payload(marker)], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(
        ValueError, match=r"Eval set 'c': cannot read .*evil\.npz as an \.npz of numeric arrays"
    ):
        data.load_eval_set("c", tmp_path / "evil.npz", (8, 8, 1))


# ------------------------------------------------------------------------------ run directories, read side


def write_run(path, epochs=3):
    writer = RunWriter(path, {"name": "r"}, N, labels=np.arange(N) % 3, noise_mask=np.zeros(N, bool))
    for e in range(1, epochs + 1):
        writer.log_epoch(
            {"epoch": e, "gwa": 0.1 * e, "test_acc": 0.5}, scores={"alignment": np.full(N, e / 10)}
        )
    writer.write_summary({"criteria": {"gwa": {"epoch": epochs}}})
    writer.finish()
    return path


def _lines(path):
    return (path / "metrics.jsonl").read_text().splitlines(keepends=True)


@pytest.mark.hostile("refused")
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            '{"epoch": 2, "gwa": 0.2, "te\n',
            "expected a JSON object with an integer 'epoch' >= 1; got invalid JSON",
        ),
        ("[1, 2]\n", "expected a JSON object with an integer 'epoch' >= 1; got '\\[1, 2\\]'"),
        ('{"gwa": 0.2}\n', "expected a JSON object with an integer 'epoch' >= 1; got"),
        ('{"epoch": "2"}\n', "expected a JSON object with an integer 'epoch' >= 1; got"),
        (
            '{"epoch": 1, "gwa": 0.1}\n',
            "expected an epoch after 1 \\(one row per epoch, increasing\\); got epoch 1 again",
        ),
    ],
)
def test_a_corrupt_metrics_line_is_reported_with_its_number(tmp_path, bad, reason):
    path = write_run(tmp_path / "run", epochs=4)
    lines = _lines(path)
    lines[1] = bad
    (path / "metrics.jsonl").write_text("".join(lines))
    before = (path / "metrics.jsonl").read_bytes()
    with pytest.warns(RunDirWarning, match=rf"metrics\.jsonl: 3 of 4 epochs readable; line 2: {reason}"):
        run = load_run(path)
    assert run.epochs == [1, 3, 4]  # every readable epoch, not just those before the bad line
    assert "line 2" in run.problems[0]
    with pytest.raises(RunDirError, match=rf"metrics\.jsonl: 3 of 4 epochs readable; line 2: {reason}"):
        rundir.read_metrics(path)
    with pytest.raises(
        RunDirError, match=r"Cannot resume .*line 2.*Resume never deletes rows it cannot read"
    ):
        RunWriter(path, {}, N, resume=True, resume_epoch=4)
    assert (path / "metrics.jsonl").read_bytes() == before  # nothing deleted


@pytest.mark.hostile("accepted")
def test_a_duplicated_last_line_is_reported_not_counted(tmp_path):
    path = write_run(tmp_path / "run", epochs=3)
    (path / "metrics.jsonl").write_text("".join(_lines(path) + _lines(path)[-1:]))
    with pytest.warns(RunDirWarning, match="3 of 4 epochs readable; line 4: expected an epoch after 3"):
        assert load_run(path).epochs == [1, 2, 3]


@pytest.mark.hostile("accepted")
def test_a_torn_last_line_is_moved_aside_on_resume(tmp_path):
    path = write_run(tmp_path / "run", epochs=2)
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "gw')
    with pytest.warns(RunDirWarning, match="2 of 3 epochs readable; line 3: torn by an interrupted write"):
        assert load_run(path).epochs == [1, 2]
    writer = RunWriter(path, {}, N, resume=True, resume_epoch=2)
    writer.log_epoch({"epoch": 3, "gwa": 0.3})
    assert (path / "metrics.jsonl.torn").read_text() == '{"epoch": 3, "gw\n'  # kept, not deleted
    assert [r["epoch"] for r in rundir.read_metrics(path)] == [1, 2, 3]


def _corrupt_config_list(path):
    (path / "config.json").write_text("[1, 2]\n")


def _corrupt_config_truncated(path):
    (path / "config.json").write_text('{"format": 1, ')


def _corrupt_summary_format(path):
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "format": 7}))


def _corrupt_summary_epoch(path):
    (path / "summary.json").write_text(json.dumps({"format": 1, "criteria": {"gwa": {"epoch": "x"}}}))


def _labels_wrong_length(path):
    np.save(path / "labels.npy", np.zeros(N + 4, np.int64))


def _noise_mask_wrong_length(path):
    np.save(path / "noise_mask.npy", np.zeros(2, bool))


@pytest.mark.hostile("refused")
@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_corrupt_config_list, r"config\.json: expected a JSON object \(the run's configuration\); got list"),
        (
            _corrupt_config_truncated,
            r"config\.json is not valid JSON \(.*\); expected the run's configuration",
        ),
        (_corrupt_summary_format, r"summary\.json has run-directory format 7; this gwa reads format"),
        (
            _corrupt_summary_epoch,
            r"summary\.json: expected criteria\['gwa'\] to be an object with an integer 'epoch'",
        ),
        (
            _labels_wrong_length,
            r"labels\.npy: expected 6 rows \(num_samples in config\.json\); got shape \(10,\)",
        ),
        (_noise_mask_wrong_length, r"noise_mask\.npy: expected 6 rows"),
    ],
)
def test_corrupt_run_files_are_named(tmp_path, corrupt, match):
    path = write_run(tmp_path / "run")
    corrupt(path)
    with pytest.raises(RunDirError, match=match):
        load_run(path)


@pytest.mark.hostile("refused")
def test_run_directory_npy_with_a_payload_is_refused(tmp_path, marker, capsys):
    path = write_run(tmp_path / "run")
    np.save(path / "labels.npy", np.array([Payload(marker)] * N, dtype=object), allow_pickle=True)
    with pytest.raises(RunDirError, match=r"labels\.npy is not a readable \.npy array of numbers"):
        load_run(path)
    code, err = _cli(["flag", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "labels.npy is not a readable .npy array" in err


@pytest.mark.hostile("refused")
@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:100]), r"alignment_0002\.npy is not a readable \.npy array"),
        (lambda f: np.save(f, np.zeros(N + 1, np.float32)), r"alignment_0002\.npy: expected 6 rows"),
    ],
)
def test_corrupt_score_files_are_named(tmp_path, damage, match):
    path = write_run(tmp_path / "run")
    damage(path / "scores" / "alignment_0002.npy")
    with pytest.raises(RunDirError, match=match):
        load_run(path).score_matrix()


@pytest.mark.hostile("accepted")
def test_a_summary_naming_an_unlogged_epoch_is_reported(tmp_path):
    path = write_run(tmp_path / "run")
    (path / "summary.json").write_text(json.dumps({"format": 1, "criteria": {"gwa": {"epoch": 99}}}))
    with pytest.warns(
        RunDirWarning, match="criterion 'gwa' chose epoch 99, which metrics.jsonl does not hold"
    ):
        assert load_run(path).epochs == [1, 2, 3]


# ---------------------------------------------------------------------------- the command line: one line each


def _cli(argv, capsys):
    from gwa.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.hostile("refused")
def test_cli_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    code, err = _cli(
        ["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "f"), "-q"], capsys
    )
    assert code == 2 and err == (
        f"gwa train: error: Expected a run directory; {tmp_path / 'f'} is a file (choose another --out).\n"
    )
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.hostile("refused")
@pytest.mark.parametrize("command", ["report", "flag", "compare"])
def test_cli_readers_on_a_file_or_a_foreign_config(tmp_path, capsys, command):
    (tmp_path / "f").write_text("mine")
    code, err = _cli([command, str(tmp_path / "f")], capsys)
    assert code == 2 and err == f"gwa {command}: error: {tmp_path / 'f'} is a file, not a run directory.\n"
    path = write_run(tmp_path / "run")
    _corrupt_config_list(path)
    code, err = _cli([command, str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "config.json: expected a JSON object" in err


@pytest.mark.hostile("refused")
def test_cli_flag_with_labels_of_the_wrong_length(tmp_path, capsys):
    path = write_run(tmp_path / "run")
    _labels_wrong_length(path)
    code, err = _cli(["flag", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "labels.npy: expected 6 rows" in err


@pytest.mark.hostile("accepted")
def test_cli_report_of_a_run_with_a_corrupt_line_says_so(tmp_path, capsys):
    path = write_run(tmp_path / "run", epochs=4)
    lines = _lines(path)
    lines[1] = "[1, 2]\n"
    (path / "metrics.jsonl").write_text("".join(lines))
    code, err = _cli(["flag", str(path), "--out", str(tmp_path / "flags.csv")], capsys)
    assert code == 0
    assert err.startswith("gwa: warning: ") and "3 of 4 epochs readable; line 2" in err


@pytest.mark.hostile("refused")
def test_cli_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    writes = []

    def disk_full():
        writes.append(1)
        if len(writes) == 4:  # a few files in: labels, then the disk fills
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "x.tmp"))

    monkeypatch.setattr(_atomic, "_fault_point", disk_full)
    code = _train(tmp_path, "--epochs", "2")
    err = capsys.readouterr().err
    assert code == 2 and err == f"gwa train: error: No space left on device: {tmp_path / 'run' / 'x.tmp'}\n"
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.undo()
    assert _train(tmp_path, "--epochs", "2", "--resume") == 0  # once there is room, the run completes
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "run")] == [1, 2]


@pytest.mark.hostile("refused")
def test_resume_cannot_shrink_a_run(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "2") == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    code = _train(tmp_path, "--resume", "--epochs", "1")
    err = capsys.readouterr().err
    assert code == 2 and "with --epochs 1: it already holds 2 epochs (--epochs may only grow" in err
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


@pytest.mark.hostile("accepted")
def test_a_genuine_checkpoint_with_a_guarded_epoch_loads_weights_only(tmp_path):
    """A tracker state with a guarded epoch (no scores here) loads with weights_only and restores the Guard."""
    from gwa.runner.train_torch import load_checkpoint
    from gwa.torch import GWATracker

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    tracker = GWATracker(model, num_samples=5)
    tracker.end_epoch()  # no batches: a guarded epoch
    assert tracker.history[0].guard is not None
    torch.save({"epoch": 1, "tracker": tracker.state_dict()}, tmp_path / "last-0001.pt")
    state = load_checkpoint(tmp_path / "last-0001.pt")["tracker"]
    assert (
        state["history"][0]["guard"]["code"] == GuardCode.NO_SCORES.value
    )  # plain values: weights_only loads it
    assert state["history"][0]["n"] == 0 and state["num_samples"] == 5
    restored = GWATracker(model, num_samples=5)
    restored.load_state_dict(state)
    assert restored.history[0].guard == tracker.history[0].guard  # a Guard again, not a dict
    assert restored.history[0].n == 0 and math.isnan(restored.history[0].gwa)
