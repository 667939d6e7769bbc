"""The hostile-input suite, shared run directories: links, special files, cycles and depth, concurrent writers,
crash windows, users' files, changed data, odd values and terminal/markdown injection (issue 20, items 5 and 7).

Every case names its class (``hostile(kind, cls=...)``), so that the test run prints the tally by class. A link
planted in a run points at a ``victim`` file outside it; each such case asserts the victim kept its bytes.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading

import numpy as np
import pytest

from gwa import rundir
from gwa.rundir import RunDirError, RunLock, RunWriter, load_run, write_atomic

N = 6
VICTIM = b"export PATH=/usr/bin  # the user's own file outside the run\n"


def _make_run(path, epochs=2, *, finish=True) -> RunWriter:
    writer = RunWriter(
        path,
        {"name": "r"},
        N,
        labels=np.arange(N) % 3,
        clean_labels=np.arange(N) % 3,
        noise_mask=np.zeros(N, bool),
    )
    for e in range(1, epochs + 1):
        writer.log_epoch(
            {"epoch": e, "align_mean": 0.1 * e, "gwa": 0.01 * e}, {"alignment": np.full(N, 0.1 * e)}
        )
    if finish:
        writer.write_summary({"criteria": {"gwa": {"epoch": epochs, "test_acc": 0.5}}})
        writer.finish()
    return writer


@pytest.fixture
def run(tmp_path):
    _make_run(tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.sh"
    path.write_bytes(VICTIM)
    yield path
    assert path.read_bytes() == VICTIM, "a write went through a link into a file outside the run"


def _finishes(fn, seconds=20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (a hang)"
    return box


# ------------------------------------------------------------------------------------------------ symlinks


@pytest.mark.hostile("accepted", cls="symlinks")
def test_a_planted_temporary_link_is_never_written_through(tmp_path, victim):
    target = tmp_path / "config.json"
    (tmp_path / "config.json.tmp").symlink_to(victim)  # the fixed name older gwa wrote through
    rundir.write_json_atomic(target, {"name": "$(touch PWNED)"})
    assert json.loads(target.read_text()) == {"name": "$(touch PWNED)"} and not target.is_symlink()
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith("config.json.") and p.name != "config.json.tmp"
    ]


@pytest.mark.hostile("accepted", cls="symlinks")
def test_a_link_at_the_target_is_replaced_not_followed(tmp_path, victim):
    (tmp_path / "out.md").symlink_to(victim)
    write_atomic(tmp_path / "out.md", lambda fh: fh.write(b"table\n"))
    assert (tmp_path / "out.md").read_bytes() == b"table\n" and not (tmp_path / "out.md").is_symlink()


@pytest.mark.hostile("refused", cls="symlinks")
def test_a_planted_torn_line_link_is_refused_not_written_through(run, victim):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('touch "$HOME/PWNED" #')  # a torn last line: no newline
    (run / "metrics.jsonl.torn").symlink_to(victim)
    with pytest.raises(
        RunDirError, match=r"metrics\.jsonl\.torn is a symbolic link; expected a regular file"
    ):
        RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=2)
    (
        run / "metrics.jsonl.torn"
    ).unlink()  # once the link is gone, resume moves the line aside (a regular file)
    RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=2).close()
    assert (run / "metrics.jsonl.torn").read_text() == 'touch "$HOME/PWNED" #\n'


@pytest.mark.hostile("refused", cls="symlinks")
@pytest.mark.parametrize("new_run", [False, True])
def test_a_linked_lock_file_is_refused_not_truncated(tmp_path, victim, new_run):
    path = tmp_path / "run"
    if new_run:  # a folder holding only gwa.lock counts as empty: a new run would go there
        path.mkdir()
    else:
        _make_run(path)
        (path / "gwa.lock").unlink()
    (path / "gwa.lock").symlink_to(victim)
    with pytest.raises(RunDirError, match=r"gwa\.lock is a symbolic link; expected a regular file"):
        RunLock(path).acquire()
    with pytest.raises(RunDirError, match=r"gwa\.lock is a symbolic link"):
        RunWriter(path, {}, N, resume=not new_run)


@pytest.mark.hostile("refused", cls="symlinks")
@pytest.mark.parametrize("folder", ["scores", "checkpoints", "report"])
def test_a_linked_folder_in_a_run_is_refused_by_readers_and_writers(run, tmp_path, folder):
    outside = tmp_path / "someone_elses"
    outside.mkdir()
    for name in (
        "last-final.pt",
        "best_gwa-resnet50.pt",
        "survey_2023.csv",
        "alignment_0009.npy",
        "curves.png",
    ):
        (outside / name).write_bytes(b"precious")
    if (run / folder).exists():
        (run / folder).rename(tmp_path / f"{folder}.moved")
    (run / folder).symlink_to(outside, target_is_directory=True)
    expected = rf"{folder} is a symbolic link; expected a folder"
    with pytest.raises(RunDirError, match=expected):
        load_run(run)  # report, flag and compare start here
    with pytest.raises(RunDirError, match=expected):
        RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=1)
    with pytest.raises(RunDirError, match=expected):
        RunWriter(run, {"name": "r"}, N, overwrite=True)
    from gwa.runner import checkpoint

    with pytest.raises(RunDirError, match=expected):
        checkpoint.commit(
            run, "last", epoch=3, backend="torch", suffix=".pt", write=lambda fh: fh.write(b"x")
        )
    assert sorted(p.name for p in outside.iterdir()) == [
        "alignment_0009.npy",
        "best_gwa-resnet50.pt",
        "curves.png",
        "last-final.pt",
        "survey_2023.csv",
    ]
    assert all(p.read_bytes() == b"precious" for p in outside.iterdir())


@pytest.mark.hostile("refused", cls="symlinks")
@pytest.mark.parametrize("name", ["labels.npy", "config.json", "summary.json"])
def test_a_linked_run_file_is_refused(run, victim, name):
    (run / name).unlink()
    (run / name).symlink_to(victim)
    with pytest.raises(RunDirError, match=re.escape(name) + " is a symbolic link"):
        load_run(run)
    with pytest.raises(RunDirError, match=r"is a symbolic link"):
        RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=2)


@pytest.mark.hostile("refused", cls="symlinks")
def test_a_linked_score_file_is_not_read(run, tmp_path):
    np.save(tmp_path / "elsewhere.npy", np.full(N, 0.5, np.float32))
    (run / "scores" / "alignment_0002.npy").unlink()
    (run / "scores" / "alignment_0002.npy").symlink_to(tmp_path / "elsewhere.npy")
    with pytest.raises(
        RunDirError, match=r"alignment_0002\.npy: it is a symbolic link; expected a regular file"
    ):
        load_run(run).score_matrix()


@pytest.mark.hostile("accepted", cls="symlinks")
def test_report_and_flag_replace_planted_links_in_their_outputs(run, victim, tmp_path):
    pytest.importorskip("matplotlib")
    from gwa.report import flag_samples, write_report

    (run / "report").mkdir()
    for name in ("curves.png", "report.html", "report.html.tmp"):
        (run / "report" / name).symlink_to(victim)
    write_report(run)
    assert (run / "report" / "report.html").read_bytes().startswith(b"<!DOCTYPE html>")
    assert not (run / "report" / "curves.png").is_symlink()
    (tmp_path / "flags.csv.tmp").symlink_to(victim)
    flag_samples(run).to_csv(tmp_path / "flags.csv")
    assert (tmp_path / "flags.csv").read_text().startswith("rank,sample_id,label,score,flagged")


# ------------------------------------------------------------------------------------------- special files


@pytest.mark.hostile("refused", cls="special files")
@pytest.mark.parametrize(
    ("name", "device"), [("metrics.jsonl", "/dev/zero"), ("config.json", "/dev/urandom")]
)
def test_a_run_file_that_is_a_device_is_refused_at_once(run, name, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist on this platform")
    (run / name).unlink()
    (run / name).symlink_to(device)
    box = _finishes(lambda: load_run(run))
    assert isinstance(box.get("error"), RunDirError), box
    assert f"{run / name}" in str(box["error"]) and "expected a regular file" in str(box["error"])


@pytest.mark.hostile("refused", cls="special files")
@pytest.mark.parametrize("name", ["labels.npy", "metrics.jsonl"])
def test_a_fifo_in_a_run_is_refused_without_blocking(run, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    box = _finishes(lambda: load_run(run))
    assert isinstance(box.get("error"), RunDirError) and "is a FIFO; expected a regular file" in str(
        box["error"]
    )
    os.unlink(run / name)


@pytest.mark.hostile("refused", cls="special files")
def test_a_fifo_score_file_is_refused_without_blocking(run):
    (run / "scores" / "alignment_0002.npy").unlink()
    os.mkfifo(run / "scores" / "alignment_0002.npy")
    loaded = load_run(run)
    box = _finishes(lambda: loaded.scores(2))
    assert isinstance(box.get("error"), RunDirError) and "alignment_0002.npy: it is a FIFO" in str(
        box["error"]
    )


@pytest.mark.hostile("refused", cls="special files")
def test_a_huge_metrics_file_is_refused_naming_the_cap(run):
    with open(run / "metrics.jsonl", "r+b") as fh:  # sparse: costs no disk
        fh.truncate(rundir.MAX_JSON_BYTES + 1)
    with pytest.raises(
        RunDirError,
        match=rf"metrics\.jsonl: it holds {rundir.MAX_JSON_BYTES + 1} bytes; "
        rf"expected at most {rundir.MAX_JSON_BYTES}",
    ):
        load_run(run)


@pytest.mark.hostile("refused", cls="special files")
def test_a_fifo_cifar_batch_is_refused_without_blocking(tmp_path):
    from gwa.runner.safe_pickle import load_array_pickle

    os.mkfifo(tmp_path / "data_batch_1")
    box = _finishes(lambda: load_array_pickle(tmp_path / "data_batch_1"))
    assert isinstance(box.get("error"), ValueError) and "is a FIFO" in str(box["error"])


# ------------------------------------------------------------------------------------------- cycles and depth


def _cyclic_list():
    cycle: list = []
    cycle.append(cycle)
    return cycle


@pytest.mark.hostile("refused", cls="cycles and depth")
def test_a_self_referencing_pickle_is_refused_not_looped_over(tmp_path):
    from gwa.runner.safe_pickle import load_array_pickle

    (tmp_path / "batch").write_bytes(pickle.dumps({b"data": _cyclic_list()}))
    box = _finishes(lambda: load_array_pickle(tmp_path / "batch"))
    assert str(box.get("error")) == (
        f"Refusing to read {tmp_path / 'batch'}: expected plain data; it holds a list that contains itself."
    )


@pytest.mark.hostile("refused", cls="cycles and depth")
def test_a_self_referencing_noise_pt_is_refused_not_looped_over(tmp_path):
    torch = pytest.importorskip("torch")
    from gwa.runner.safe_pickle import torch_load_arrays

    torch.save({"aggre_label": _cyclic_list()}, tmp_path / "CIFAR-10_human.pt")
    box = _finishes(lambda: torch_load_arrays(tmp_path / "CIFAR-10_human.pt"))
    assert "it holds a list that contains itself" in str(box.get("error"))


@pytest.mark.hostile("accepted", cls="cycles and depth")
def test_a_shared_dag_of_2_to_the_60_paths_is_walked_once(tmp_path):
    from gwa.runner.safe_pickle import load_array_pickle

    node: list = [np.arange(3)]
    for _ in range(60):
        node = [node, node]
    (tmp_path / "dag").write_bytes(pickle.dumps(node))
    box = _finishes(lambda: load_array_pickle(tmp_path / "dag"), seconds=10)
    assert "error" not in box and box["value"][0] is box["value"][1]


@pytest.mark.hostile("refused", cls="cycles and depth")
def test_a_pickle_with_too_many_items_is_refused(tmp_path, monkeypatch):
    from gwa.runner import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_NODES", 1000)
    (tmp_path / "flood").write_bytes(pickle.dumps([[i, i] for i in range(600)]))
    with pytest.raises(ValueError, match=r"flood: expected plain data; it holds more than 1000 items"):
        safe_pickle.load_array_pickle(tmp_path / "flood")


@pytest.mark.hostile("refused", cls="cycles and depth")
@pytest.mark.parametrize("depth", [300, 100_000])
@pytest.mark.parametrize("name", ["config.json", "summary.json", "checkpoints/last.json"])
def test_deeply_nested_json_is_a_clear_error(run, name, depth):
    from gwa.runner import checkpoint

    (run / name).parent.mkdir(exist_ok=True)
    (run / name).write_text("[" * depth + "]" * depth)
    with pytest.raises(RunDirError, match=re.escape(name.split("/")[-1]) + ".*(nested|expected)"):
        checkpoint.read_mark(run, "last") if name.startswith("checkpoints") else load_run(run)


@pytest.mark.hostile("accepted", cls="cycles and depth")
def test_a_deeply_nested_metrics_line_is_named_not_a_traceback(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, '{"epoch": 9, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(rundir.RunDirWarning, match=r"2 of 3 epochs readable; line 2: expected a JSON object"):
        loaded = load_run(run)
    assert loaded.epochs == [1, 2]


# ------------------------------------------------------------------------------------------------ concurrency


@pytest.mark.hostile("accepted", cls="concurrency")
def test_two_writers_of_one_output_never_mix_their_bytes(tmp_path):
    target = tmp_path / "table.md"
    contents = {w: bytes([65 + w]) * 200_000 for w in range(2)}
    errors: list = []
    seen: set = set()

    def writer(w):
        try:
            for _ in range(40):
                write_atomic(
                    target,
                    lambda fh, w=w: [fh.write(contents[w][i : i + 4096]) for i in range(0, 200_000, 4096)],
                )
                seen.add(target.read_bytes())
        except BaseException as exc:  # a FileNotFoundError on a shared temporary name, as before
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and seen <= set(contents.values()) and target.read_bytes() in contents.values()
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]  # no temporary left behind


# ------------------------------------------------------------------------------------------------ crash windows


@pytest.mark.hostile("accepted", cls="crash windows")
def test_a_kill_while_resume_rewrites_the_metrics_leaves_every_row_with_its_scores(run, monkeypatch):
    from gwa.rundir import _writer

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a SIGKILL at the resume's first metrics write

    monkeypatch.setattr(_writer.RunWriter, "_rewrite_metrics", killed)
    with pytest.raises(KeyboardInterrupt):
        RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=1)
    monkeypatch.undo()
    loaded = load_run(run)
    for epoch in loaded.epochs:  # "a metrics row always has its scores on disk"
        assert loaded.scores(epoch).shape == (N,)
    RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=1).close()  # the next resume completes it
    assert load_run(run).epochs == [1] and not (run / "scores" / "alignment_0002.npy").exists()


@pytest.mark.hostile("accepted", cls="crash windows")
def test_temporaries_a_kill_left_are_cleared_by_resume_and_by_a_fresh_start(run, tmp_path):
    leftovers = [
        run / "config.json.0123456789abcdef.tmp",
        run / "scores" / "alignment_0003.npy.fedcba9876543210.tmp",
        run / "checkpoints" / "last-0003.pt.00000000aaaaaaaa.tmp",
    ]
    (run / "checkpoints").mkdir()
    for f in leftovers:
        f.write_bytes(b"half")
    RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=2).close()
    assert not any(f.exists() for f in leftovers)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json.0123456789abcdef.tmp").write_bytes(b"half")  # killed before its first commit
    (fresh / "gwa.lock").write_bytes(b"123\n")
    _make_run(fresh)
    assert sorted(p.name for p in fresh.iterdir()) == sorted(
        p.name for p in run.iterdir() if p.name != "checkpoints"
    )


# ------------------------------------------------------------------------------------------------- user files


@pytest.mark.hostile("accepted", cls="user files")
def test_a_checkpoint_commit_keeps_the_users_copies(run):
    from gwa.runner import checkpoint

    folder = run / "checkpoints"
    folder.mkdir()
    mine = ["last-backup.pt", "best_gwa-keep.pt", "last-0001.pt.bak", "lastly.pt"]
    for name in mine:
        (folder / name).write_bytes(b"mine")
    for epoch in (1, 2):
        checkpoint.commit(
            run, "last", epoch=epoch, backend="torch", suffix=".pt", write=lambda fh: fh.write(b"w")
        )
    assert sorted(p.name for p in folder.iterdir()) == sorted([*mine, "last-0002.pt", "last.json"])


@pytest.mark.hostile("accepted", cls="user files")
def test_resume_keeps_the_users_files_in_scores(run):
    mine = ["notes_2024.txt", "plot_0099.png", "alignment_0009.csv", "README"]
    for name in mine:
        (run / "scores" / name).write_bytes(b"mine")
    RunWriter(run, {"name": "r"}, N, resume=True, resume_epoch=1).close()
    assert sorted(p.name for p in (run / "scores").iterdir()) == sorted([*mine, "alignment_0001.npy"])
    assert load_run(run).signals() == ["alignment"]


# ----------------------------------------------------------------------------------------------- odd values


def _rewrite_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.hostile("refused", cls="odd values")
@pytest.mark.parametrize(
    ("file", "changes", "match"),
    [
        (
            "config.json",
            '{"num_samples": 1e999}',
            r"config\.json: expected 'num_samples' to be an integer > 0; got inf",
        ),
        (
            "config.json",
            '{"num_samples": NaN}',
            r"config\.json: expected 'num_samples' to be an integer > 0; got nan",
        ),
        (
            "config.json",
            '{"name": ["a", "b"]}',
            r"config\.json: expected 'name' to be a string; got \['a', 'b'\]",
        ),
        (
            "summary.json",
            '{"criteria": {"gwa": {"epoch": 2, "test_acc": "n/a"}}}',
            r"criteria\['gwa'\]\['test_acc'\] to be a number or null; got 'n/a'",
        ),
        (
            "summary.json",
            '{"criteria": {"gwa": {"epoch": 2, "test_acc": true}}}',
            r"criteria\['gwa'\]\['test_acc'\] to be a number or null; got True",
        ),
    ],
)
def test_json_values_of_the_wrong_type_are_named(run, file, changes, match):
    data = json.loads((run / file).read_text())
    data.update(json.loads(changes))
    (run / file).write_text(json.dumps(data))
    with pytest.raises(RunDirError, match=match):
        load_run(run)


@pytest.mark.hostile("refused", cls="odd values")
@pytest.mark.parametrize(
    ("name", "array", "match"),
    [
        (
            "labels.npy",
            np.array(["a"] * N),
            r"labels\.npy: expected an array of integers or floats; got dtype <U1",
        ),
        (
            "labels.npy",
            np.full(N, np.nan),
            r"labels\.npy: expected class ids or -1 \(integers\); got non-integer",
        ),
        ("labels.npy", np.full(N, -5), r"labels\.npy: expected class ids or -1 >= -1; got values from -5"),
        (
            "noise_mask.npy",
            np.array(["no"] * N),
            r"noise_mask\.npy: expected an array of booleans or integers; got dtype <U2",
        ),
        ("noise_mask.npy", np.full(N, 7), r"noise_mask\.npy: expected booleans \(or 0/1\)"),
        (
            "previews.npy",
            np.zeros((N, 4, 5, 5)),
            r"previews\.npy: expected \(K, L\) signals or \(K, H, W\), \(K, H, W, C\) or \(K, C, H, W\) images",
        ),
        ("preview_ids.npy", np.arange(N) + 100, r"preview_ids\.npy: expected sample ids below num_samples=6"),
    ],
)
def test_run_arrays_of_the_wrong_kind_are_named(run, name, array, match):
    np.save(run / name, array)
    if name == "previews.npy":
        np.save(run / "preview_ids.npy", np.arange(N))
    with pytest.raises(RunDirError, match=match):
        load_run(run)


@pytest.mark.hostile("refused", cls="odd values")
@pytest.mark.parametrize(
    ("array", "match"),
    [
        (
            np.zeros((N, 2), np.float32),
            r"alignment_0002\.npy: expected shape \(6,\), one score per sample; got \(6, 2\)",
        ),
        (
            np.zeros(N, np.complex64),
            r"alignment_0002\.npy: expected an array of booleans or integers or floats; got dtype complex64",
        ),
    ],
)
def test_score_files_of_the_wrong_shape_or_kind_are_named(run, array, match):
    np.save(run / "scores" / "alignment_0002.npy", array)
    with pytest.raises(RunDirError, match=match):
        load_run(run).score_matrix()


@pytest.mark.hostile("accepted", cls="odd values")
def test_a_format_1_row_with_a_numeric_guard_reads(run):
    _rewrite_json(run / "config.json", format=1)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[0]["gwa_guard"] = 5
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = load_run(run).metrics[0]
    assert first["gwa_guard"] == "kurtosis_pole" and first["gwa_guard_message"] == "5"


# ------------------------------------------------------------------------------------------- injection


@pytest.mark.hostile("accepted", cls="injection")
def test_compare_escapes_run_names_for_terminals_and_markdown(tmp_path, capsys):
    from gwa.cli import main

    names = {
        "newline": "x |\n| 1 | best-run | 9 | 9.9 | 1 | 1 | 9.9 | 1 | 1 |",
        "ansi": "evil\x1b[2J\x1b]0;pwned\x07",
        "html": "<img src=x onerror=alert(1)>",
    }
    for key, name in names.items():
        _make_run(tmp_path / key)
        _rewrite_json(tmp_path / key / "config.json", name=name)
    out = tmp_path / "table.md"
    assert main(["compare", *(str(tmp_path / k) for k in names), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for text in (printed, out.read_text()):
        rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
        assert len(rows) == 3  # one row per run: the newline forged none
        assert "\x1b" not in text and "\x07" not in text and "<img" not in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text and "evil\\x1b[2J\\x1b]0;pwned\\x07" in text
        assert "x \\|\\n\\| 1 \\| best-run" in text
