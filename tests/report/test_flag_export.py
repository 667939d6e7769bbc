"""gwa flag's per-class summary and cleanlab-compatible export, indexed by the source dataset."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

import gwa
from gwa.cli import flag as flag_cmd
from gwa.report import flag_samples
from gwa.report._flag_export import label_quality, per_class_rows
from gwa.rundir import RunWriter

# Six samples over two epochs; samples 1 and 3 are negative (their labels look swapped: 0 <-> 1).
MATRIX = np.array([[0.4, -0.3, 0.2, -0.5, 0.1, 0.3], [0.6, -0.1, 0.4, -0.3, np.nan, 0.5]])
LABELS = np.array([0, 0, 1, 1, 2, 2])
PRED = np.array([[0, 1, 1, 0, 2, 2], [0, 1, 1, 0, np.nan, 2]], dtype=np.float64)
SOURCE = np.array([10, 3, 7, 0, 5, 1])
NAMES = ["cat", "dog", "bird"]


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    config = {"class_names": NAMES, "source_size": 12, "epochs": 2}
    writer = RunWriter(path, config, 6, labels=LABELS, noise_mask=np.array([0, 1, 0, 1, 0, 0], bool))
    for e in (1, 2):
        row = {"epoch": e, **gwa.summarize(MATRIX[e - 1][np.isfinite(MATRIX[e - 1])]).metrics()}
        writer.log_epoch(row, {"alignment": MATRIX[e - 1], "pred": PRED[e - 1]})
    writer.write_array("source_index", SOURCE)
    writer.finish()
    return path


def test_the_export_is_indexed_by_the_source_dataset(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    args = argparse.Namespace(
        run=str(run_dir),
        rule="mean",
        last_k=3,
        top=None,
        threshold=None,
        out=str(out / "f.csv"),
        export_dir=None,
    )
    assert flag_cmd.run(args) == 0
    issues = np.load(out / "label_issues.npy")
    quality = np.load(out / "label_quality.npy")
    assert issues.dtype == bool and issues.shape == (12,) and quality.shape == (12,)
    np.testing.assert_array_equal(np.flatnonzero(issues), [0, 3])  # sources of samples 3 and 1
    means = np.nanmean(MATRIX, axis=0)
    np.testing.assert_allclose(quality[SOURCE], (1 + means) / 2)
    unused = np.setdiff1d(np.arange(12), SOURCE)
    assert np.isnan(quality[unused]).all() and not issues[unused].any()
    with open(out / "label_issues.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["source_index"]) for r in rows] == sorted(SOURCE)
    first = rows[0]  # source row 0 is sample 3: label 1 (dog), predicted 0 (cat), flagged
    assert (first["sample_id"], first["label_name"], first["prediction_name"], first["is_label_issue"]) == (
        "3",
        "dog",
        "cat",
        "1",
    )
    with open(out / "flagged_classes.csv") as fh:
        classes = {int(r["label"]): r for r in csv.DictReader(fh)}
    assert classes[0]["flagged"] == "1" and classes[0]["likely_true_name"] == "dog"
    assert classes[1]["likely_true"] == "0" and float(classes[1]["pair_share"]) == 1.0
    assert classes[2]["flagged"] == "0" and classes[2]["likely_true"] == ""
    assert float(classes[0]["precision"]) == 1.0
    printed = capsys.readouterr().out
    assert "class 0 (cat): 1 of 2 flagged (50.0%), 100% of them predicted as 1 (dog)" in printed
    with open(out / "f.csv") as fh:
        ranking = list(csv.DictReader(fh))
    assert ranking[0]["sample_id"] == "3" and ranking[0]["source_index"] == "0"
    assert ranking[0]["label_name"] == "dog" and ranking[0]["prediction_name"] == "cat"


def test_per_class_rows_and_quality_map(run_dir):
    result = flag_samples(run_dir, rule="frac")
    np.testing.assert_allclose(label_quality("frac", result.scores), 1 - result.scores)
    rows = per_class_rows(result, NAMES)
    assert [r["label"] for r in rows] == [0, 1, 2]
    assert [r["seen"] for r in rows] == [2, 2, 2]
    assert rows[1]["flagged"] == 1 and rows[1]["likely_true"] == 0


def test_a_run_without_source_index_is_indexed_by_sample_id(tmp_path):
    path = tmp_path / "plain"
    writer = RunWriter(path, {}, 6, labels=LABELS)
    for e in (1, 2):
        writer.log_epoch({"epoch": e, "gwa": 0.1 * e}, {"alignment": MATRIX[e - 1]})
    writer.finish()
    args = argparse.Namespace(
        run=str(path),
        rule="mean",
        last_k=3,
        top=None,
        threshold=None,
        out=None,
        export_dir=str(tmp_path / "x"),
    )
    flag_cmd.run(args)
    issues = np.load(tmp_path / "x" / "label_issues.npy")
    np.testing.assert_array_equal(np.flatnonzero(issues), [1, 3])
    assert (path / "flagged.csv").exists() and (tmp_path / "x" / "flagged_classes.csv").exists()
