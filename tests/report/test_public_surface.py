"""gwa.report's public surface: the names it exports are the commands' own objects, and they work from there."""

from __future__ import annotations

import numpy as np
import pytest

import gwa.report
from gwa.report import _compare as compare
from gwa.report import _flag as flag
from gwa.report import _page as report

PUBLIC = {
    "write_report": report.write_report,
    "flag_samples": flag.flag_samples,
    "FlagResult": flag.FlagResult,
    "compare_runs": compare.compare_runs,
    "CompareResult": compare.CompareResult,
    "RunRow": compare.RunRow,
    "Correlation": compare.Correlation,
}


def test_all_lists_exactly_the_public_api():
    assert sorted(gwa.report.__all__) == sorted(PUBLIC)
    namespace: dict = {}
    exec("from gwa.report import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_are_the_implementations_and_documented(name):
    obj = getattr(gwa.report, name)
    assert obj is PUBLIC[name]
    assert obj.__doc__ and obj.__doc__.strip(), f"gwa.report.{name} has no docstring"


def test_public_api_on_a_hand_built_run(tmp_path, write_run):
    # Two epochs, three samples: mean alignments 0.4, -0.3, -0.1 (worked out by hand).
    matrix = np.array([[0.5, -0.4, 0.1], [0.3, -0.2, -0.3]])
    noisy = np.array([False, True, False])
    path = write_run(
        tmp_path / "run", matrix, noise_mask=noisy, metrics=[{"test_acc": 0.6}, {"test_acc": 0.7}]
    )
    res = gwa.report.flag_samples(path, rule="mean")
    assert isinstance(res, gwa.report.FlagResult)
    np.testing.assert_array_equal(res.sample_ids, [1, 2, 0])
    np.testing.assert_allclose(res.scores, [-0.3, -0.1, 0.4])
    np.testing.assert_array_equal(res.flagged_ids, [1, 2])
    assert (res.precision, res.recall) == (0.5, 1.0)
    compared = gwa.report.compare_runs([path])
    assert isinstance(compared, gwa.report.CompareResult)
    (row,) = compared.rows
    assert isinstance(row, gwa.report.RunRow)
    assert (row.epochs, row.best_test, row.best_test_epoch) == (2, 0.7, 2)
    assert (row.max_align, row.align_epoch) == (pytest.approx(0.2 / 3), 1)  # epoch 1's mean is the higher
    assert compared.correlations == []  # one run: nothing to correlate
