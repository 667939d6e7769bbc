"""classes.jsonl: written after each epoch's metrics row, read back validated, trimmed on resume, gwa's own file."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import gwa
from gwa.rundir import RunDirWarning, RunWriter, class_row, load_run, own_files


def _evidence(shift=0):
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    scores = np.array([0.3, -0.2, 0.4, 0.1, 0.2, -0.1]) + shift
    return gwa.class_evidence(scores, labels, predictions, 3)


def _write(path, epochs=3, resume_epoch=None, resume=False):
    writer = RunWriter(path, {}, 6, resume=resume, resume_epoch=resume_epoch)
    start = len(writer.rows)
    for e in range(start + 1, epochs + 1):
        writer.log_epoch({"epoch": e, "gwa": 0.1 * e})
        writer.log_classes(class_row(e, _evidence(0.01 * e)))
    return writer


def test_rows_are_written_and_read_back_as_class_evidence(tmp_path):
    _write(tmp_path / "r").finish()
    run = load_run(tmp_path / "r")
    assert [r["epoch"] for r in run.classes] == [1, 2, 3] and not run.problems
    assert run.class_evidence() == [_evidence(0.01 * e) for e in (1, 2, 3)]
    assert tmp_path / "r" / "classes.jsonl" in own_files(tmp_path / "r")


def test_a_row_must_follow_its_metrics_row(tmp_path):
    writer = RunWriter(tmp_path / "r", {}, 6)
    with pytest.raises(ValueError, match=r"per-class row of the last logged epoch \(None\); got epoch 1"):
        writer.log_classes(class_row(1, _evidence()))
    writer.log_epoch({"epoch": 1})
    with pytest.raises(ValueError, match=r"last logged epoch \(1\); got epoch 2"):
        writer.log_classes(class_row(2, _evidence()))
    writer.close()


def test_bad_rows_are_left_out_and_named(tmp_path):
    _write(tmp_path / "r").finish()
    path = tmp_path / "r" / "classes.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["count"] = [1, 2]  # not C entries
    late = json.loads(lines[2])
    late["epoch"] = 9  # not in metrics.jsonl
    path.write_text("\n".join([lines[0], json.dumps(broken), json.dumps(late), "{not json"]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(tmp_path / "r")
    assert [r["epoch"] for r in run.classes] == [1]
    assert len(run.problems) == 3 and any(issubclass(w.category, RunDirWarning) for w in caught)
    assert run.problems[0].startswith("classes.jsonl line 2: Expected `")  # the core's parser names the field
    assert "line 3: epoch 9, which metrics.jsonl does not hold" in run.problems[1]
    assert run.class_evidence() is None  # epochs 2 and 3 have no evidence


def test_resume_drops_the_rows_of_epochs_it_redoes(tmp_path):
    _write(tmp_path / "r", epochs=4).close()
    writer = RunWriter(tmp_path / "r", {}, 6, resume=True, resume_epoch=2)
    assert [r["epoch"] for r in writer.class_rows] == [1, 2]
    lines = (tmp_path / "r" / "classes.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    writer.log_epoch({"epoch": 3})
    writer.log_classes(class_row(3, _evidence(0.5)))
    writer.finish()
    assert load_run(tmp_path / "r").class_evidence()[2] == _evidence(0.5)
