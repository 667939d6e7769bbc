"""Per-run quantities shared by report, flag and compare, against brute-force loops."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gwa.report import _analysis as A
from gwa.rundir import load_run


def test_sample_stats_against_loops():
    rng = np.random.default_rng(3)
    matrix = rng.normal(0, 0.3, (7, 40))
    matrix[rng.random(matrix.shape) < 0.2] = np.nan
    matrix[:, 5] = np.nan  # never seen
    stats = A.sample_stats(matrix)
    for i in range(matrix.shape[1]):
        col = matrix[:, i]
        seen = col[np.isfinite(col)]
        if seen.size == 0:
            assert (
                stats.n_seen[i] == 0
                and np.isnan([stats.mean[i], stats.std[i], stats.last[i], stats.frac_negative[i]]).all()
            )
            continue
        assert stats.n_seen[i] == seen.size
        assert stats.mean[i] == pytest.approx(seen.mean())
        assert stats.std[i] == pytest.approx(seen.std())
        assert stats.last[i] == seen[-1]
        assert stats.frac_negative[i] == pytest.approx((seen < 0).mean())
    assert stats.seen.sum() == 39


def test_recomputed_choices_follow_the_core_policy(tmp_path, write_run):
    # 11 epochs: the warm-up is epoch 1 (floor 1.1), which has the highest value of both curves.
    paper = [5.0, 0.2, 0.9, 3.0, 0.4, 0.1, 0.3, 0.2, 0.1, 0.05, 0.7]  # epoch 4: the kurtosis pole
    flagged = [False, False, False, True, False, False, False, False, False, False, False]
    default = [0.5, 0.02, 0.09, 0.03, 0.04, 0.01, 0.03, 0.02, 0.01, 0.005, 0.07]
    test = [0.1, 0.5, 0.6, 0.9, 0.55, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4]
    rows = [
        {"gwa": d, "gwa_paper": g, "gwa_paper_flagged": f, "test_acc": t, "val_acc": 1 - t}
        for d, g, f, t in zip(default, paper, flagged, test, strict=True)
    ]
    run = load_run(write_run(tmp_path / "r", metrics=rows))
    got = A.chosen_epochs(run)
    # gwa (the default value) after the warm-up: epoch 3 (0.09); gwa_paper (verbatim, pole included) takes
    # the pole epoch 4; val best = epoch 1 (no warm-up for the validation split).
    assert {k: (c.epoch, c.test_acc, c.source) for k, c in got.items()} == {
        "gwa_paper": (4, 0.9, "recomputed"),
        "gwa": (3, 0.6, "recomputed"),
        "val": (1, 0.1, "recomputed"),
        "last": (11, 0.4, "recomputed"),
        "oracle": (4, 0.9, "recomputed"),
    }


def test_recomputed_choices_use_the_runs_planned_epochs_and_finetune(tmp_path, write_run):
    default = [0.9, 0.1, 0.3, 0.2, 0.5, 0.8]
    rows = [{"gwa": d} for d in default]
    stopped = load_run(write_run(tmp_path / "s", metrics=rows))
    assert A.recompute_choices(stopped)["gwa"].epoch == 1  # 6 logged epochs, no planned epochs: warm-up 0
    # A run planned for 20 epochs that stopped after 6: the warm-up is 2 epochs (10% of 20).
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    (tmp_path / "s" / "config.json").write_text(json.dumps({**cfg, "epochs": 20}))
    assert A.recompute_choices(load_run(tmp_path / "s"))["gwa"].epoch == 6
    # The fine-tuning rule (config "finetune"): after the warm-up (epoch 1 of 10), the first local minimum
    # (epoch 4), then the maximum from there on (epoch 6); the plain rule takes epoch 2.
    values = [0.1, 0.8, 0.5, 0.2, 0.3, 0.6, 0.4, 0.3, 0.2, 0.1]
    path = write_run(tmp_path / "f", metrics=[{"gwa": v} for v in values])
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "epochs": 10}))
    assert A.recompute_choices(load_run(path))["gwa"].epoch == 2
    (path / "config.json").write_text(json.dumps({**cfg, "epochs": 10, "finetune": True}))
    assert A.recompute_choices(load_run(path))["gwa"].epoch == 6


def test_summary_choices_fill_missing_test_acc(tmp_path, write_run):
    rows = [{"test_acc": 0.1 * e} for e in range(1, 4)]
    run = load_run(
        write_run(tmp_path / "r", metrics=rows, summary={"criteria": {"x": {"epoch": 2}, "y": {}}})
    )
    got = A.chosen_epochs(run)
    assert list(got) == ["x"] and got["x"].test_acc == pytest.approx(0.2) and got["x"].source == "summary"


def test_gwa_paper_curve_flags_guard_and_non_finite(tmp_path, write_run):
    rows = [
        {"gwa": 0.05, "gwa_paper": 0.1},
        {
            "gwa": 0.06,
            "gwa_paper": 0.2,
            "gwa_guard": "kurtosis_pole",
            "gwa_guard_message": "kurtosis pole: excess kurtosis -1.2 + beta 1.2 = 0 <= 0.1",
        },
        {"gwa": None, "gwa_paper": None},
        {"gwa": 0.07, "gwa_paper": 0.3, "gwa_paper_flagged": True},
        {"gwa": 0.08, "gwa_paper": 0.4, "gwa_guard": "constant_scores"},
    ]
    run = load_run(write_run(tmp_path / "r", metrics=rows))
    curve, guarded = A.gwa_paper_curve(run)
    np.testing.assert_array_equal(curve, [0.1, 0.2, np.nan, 0.3, 0.4])  # the paper's value, not the default
    assert guarded.tolist() == [False, True, True, True, True]
    assert A.guard_reasons(run) == {
        2: ("kurtosis_pole", "kurtosis pole: excess kurtosis -1.2 + beta 1.2 = 0 <= 0.1"),
        4: ("flagged", "flagged by the trainer"),
        5: ("constant_scores", "flagged by the trainer"),
    }


def test_mean_alignment_falls_back_to_scores(tmp_path, write_run):
    matrix = np.array([[0.1, 0.3, np.nan], [-0.2, 0.4, 0.1]])
    run = load_run(write_run(tmp_path / "r", matrix, metrics=[{"align_mean": None}, {"align_mean": 0.5}]))
    np.testing.assert_allclose(A.mean_alignment_curve(run), [0.2, 0.5])


def test_metric_at_missing_is_nan(run_dir):
    run = load_run(run_dir)
    assert math.isnan(A.metric_at(run, "test_acc", 99)) and math.isnan(A.metric_at(run, "nope", 1))
    assert math.isnan(A.metric_at(run, "test_acc", None))


def test_ranges_and_html_helpers():
    from gwa.report._html import fmt, sparkline_svg, table
    from gwa.report._page import _ranges
    from gwa.report._plots import pick_epochs

    assert _ranges([1, 2, 3, 5, 7, 8]) == "1–3, 5, 7–8"
    assert fmt(None) == fmt(float("nan")) == "–" and fmt(3) == "3" and fmt(0.12345) == "0.123"
    assert "&lt;b&gt;" in table(["h"], [["<b>"]]) and "<b>" in table(["h"], [["<b>"]], raw={0})
    svg = sparkline_svg(np.sin(np.linspace(0, 6, 30)))
    assert svg.count(",") == 30 and svg.startswith("<svg")
    assert pick_epochs(range(1, 101), max_rows=5, extra=[37]) == [
        1,
        26,
        37,
        51,
        75,
        100,
    ]  # rows at indices round(linspace(0, 99, 5))
    assert pick_epochs([1, 2], max_rows=7) == [1, 2]


def test_command_modules_import_without_matplotlib():
    code = (
        "import sys, gwa.report._page, gwa.report._flag, gwa.report._compare; "
        "assert not {'matplotlib', 'sklearn', 'scipy'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((8, 6), (6, 8)), ((8, 6, 3), (6, 8)), ((3, 8, 6), (6, 8)), ((1, 8, 6), (6, 8)), ((8, 6, 1), (6, 8))],
)
def test_image_thumbnail_layouts(shape, size):
    import io

    from PIL import Image

    from gwa.report._plots import image_thumbnail

    img = Image.open(io.BytesIO(image_thumbnail(np.arange(np.prod(shape), dtype=float).reshape(shape))))
    assert img.format == "PNG" and img.size == size


def test_image_thumbnail_rejects_other_shapes():
    from gwa.report._plots import image_thumbnail

    with pytest.raises(
        ValueError,
        match=r"Expected a preview image of shape \(H, W\), \(H, W, 3\) or \(3, H, W\); "
        r"got shape=\(4, 5, 6\)",
    ):
        image_thumbnail(np.zeros((4, 5, 6)))
