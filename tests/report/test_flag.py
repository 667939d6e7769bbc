"""gwa flag: rules on hand-built scores with answers worked out by hand, the CSV, the CLI and its errors."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from gwa.report import flag_samples
from gwa.rundir import RunDirError

nan = np.nan
# Samples (columns) over 4 epochs (rows). Sample 4 is never seen; sample 3 is unseen in epoch 3.
MATRIX = np.array(
    [
        #  s0    s1    s2    s3    s4    s5     s6
        [0.5, 0.2, -0.5, -0.2, nan, 0.1, -0.1],
        [0.4, -0.1, -0.4, -0.2, nan, 0.1, 0.3],
        [0.3, -0.2, 0.1, nan, nan, -0.05, 0.3],
        [0.2, -0.3, -0.2, -0.4, nan, 0.1, -0.01],
    ]
)
NOISY = np.array([False, True, False, True, False, True, False])
LABELS = np.array([0, 1, 2, 3, 4, 5, 6])


@pytest.fixture
def hand_run(tmp_path, write_run):
    return write_run(tmp_path / "hand", MATRIX, noise_mask=NOISY, labels=LABELS)


def test_lastk_rule_exact(hand_run):
    res = flag_samples(hand_run, rule="lastk")  # k=3, threshold 0
    # Last 3 seen epochs: s3 uses epochs 1, 2, 4 (unseen in 3); s2 has a positive value among its last 3.
    np.testing.assert_array_equal(res.sample_ids, [3, 1, 2, 5, 6, 0])
    np.testing.assert_allclose(res.scores, [-0.8 / 3, -0.2, -0.5 / 3, 0.15 / 3, 0.59 / 3, 0.3])
    np.testing.assert_array_equal(res.flagged_ids, [3, 1])
    assert res.n_unseen == 1
    assert res.precision == 1.0 and res.recall == pytest.approx(2 / 3)
    # suspicion order 3(N) 1(N) 2(C) 5(N) 6(C) 0(C): 8 of 9 noisy/clean pairs ordered; AP = (1 + 1 + 3/4) / 3
    assert res.auroc == pytest.approx(8 / 9)
    assert res.auprc == pytest.approx(2.75 / 3)


def test_lastk_threshold_top_and_k(hand_run):
    np.testing.assert_array_equal(flag_samples(hand_run, rule="lastk", threshold=-0.15).flagged_ids, [3])
    np.testing.assert_array_equal(flag_samples(hand_run, rule="lastk", top=2).flagged_ids, [3, 1])
    np.testing.assert_array_equal(
        flag_samples(hand_run, rule="lastk", top=100).flagged_ids, [3, 1, 2, 5, 6, 0]
    )
    one = flag_samples(hand_run, rule="lastk", last_k=1)  # last seen value < 0
    assert set(one.flagged_ids) == {1, 2, 3, 6}
    assert one.sample_ids[0] == 3  # -0.4


def test_window_rule_is_the_default(tmp_path, write_run):
    # GWA peaks at epoch 2 and no training accuracy is logged (no transient to skip); 4 epochs: no warm-up.
    rows = [{"gwa": g} for g in (0.1, 0.3, 0.2, 0.1)]
    run = write_run(tmp_path / "w", MATRIX, metrics=rows, noise_mask=NOISY, labels=LABELS)
    res = flag_samples(run)
    assert res.rule == "window" and "over epochs 1-2" in res.description
    # means over epochs 1-2: s0 0.45, s1 0.05, s2 -0.45, s3 -0.2, s5 0.1, s6 0.1 (s5 before s6: lower id)
    np.testing.assert_array_equal(res.sample_ids, [2, 3, 1, 5, 6, 0])
    np.testing.assert_allclose(res.scores, [-0.45, -0.2, 0.05, 0.1, 0.1, 0.45])
    np.testing.assert_array_equal(res.flagged_ids, [2, 3])
    assert res.precision == 0.5 and res.recall == pytest.approx(1 / 3)


def test_mean_rule_exact(hand_run):
    res = flag_samples(hand_run, rule="mean")
    np.testing.assert_array_equal(res.sample_ids, [3, 2, 1, 5, 6, 0])
    np.testing.assert_allclose(res.scores, [-0.8 / 3, -0.25, -0.1, 0.0625, 0.1225, 0.35])
    np.testing.assert_array_equal(res.flagged_ids, [3, 2, 1])
    assert res.precision == pytest.approx(2 / 3) and res.recall == pytest.approx(2 / 3)


def test_frac_rule_exact(hand_run):
    res = flag_samples(hand_run, rule="frac")
    # s1 and s2 tie at 3/4: the lower mean alignment (s2, -0.25) ranks first.
    np.testing.assert_array_equal(res.sample_ids, [3, 2, 1, 6, 5, 0])
    np.testing.assert_allclose(res.scores, [1.0, 0.75, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(res.flagged_ids, [3, 2, 1, 6])
    assert res.precision == 0.5 and res.recall == pytest.approx(2 / 3)


def test_without_noise_mask(tmp_path, write_run):
    res = flag_samples(write_run(tmp_path / "r", MATRIX))
    assert res.is_noisy is None and res.precision is None and res.auroc is None
    assert "no noise mask" in res.summary()


def test_nothing_flagged_has_undefined_precision(hand_run):
    res = flag_samples(hand_run, threshold=-5.0)
    assert res.flagged.sum() == 0 and res.precision is None and res.recall == 0.0
    assert "precision n/a" in res.summary()


def test_cli_writes_ranked_csv(hand_run, tmp_path, commands, capsys):
    out = tmp_path / "flagged.csv"
    assert commands(["flag", str(hand_run), "--rule", "mean", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "flagged 3 of 6 samples" in printed and "precision 0.667, recall 0.667" in printed
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["rank", "sample_id", "label", "score", "flagged", "rule", "is_noisy"]
    assert {r["rule"] for r in rows} == {"mean"} and "flag rule: mean (chosen by the caller)" in printed
    assert [int(r["sample_id"]) for r in rows] == [3, 2, 1, 5, 6, 0]
    assert [int(r["rank"]) for r in rows] == list(range(1, 7))
    assert [int(r["flagged"]) for r in rows] == [1, 1, 1, 0, 0, 0]
    assert [int(r["is_noisy"]) for r in rows] == [1, 0, 1, 1, 0, 0]
    assert [int(r["label"]) for r in rows] == [3, 2, 1, 5, 6, 0]
    assert float(rows[1]["score"]) == pytest.approx(-0.25)


def test_cli_default_output_and_top(hand_run, commands, capsys):
    assert commands(["flag", str(hand_run), "--top", "1"]) == 0
    assert "top 1: flagged 1 of 6" in capsys.readouterr().out
    assert (hand_run / "flagged.csv").exists()


def test_help_documents_the_rules(commands, capsys):
    with pytest.raises(SystemExit) as exit_info:
        commands(["flag", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "'window' (default): mean alignment below T (default 0) over the epochs after the" in text
    assert "'lastk': alignment below T (default 0) in each of the last k epochs" in text
    assert "'frac': fraction of epochs with alignment < 0 at least T (default 0.5)" in text


def test_cli_top_and_threshold_are_exclusive(hand_run, commands):
    with pytest.raises(SystemExit):
        commands(["flag", str(hand_run), "--top", "1", "--threshold", "0"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"rule": "median"},
            r"Expected `rule` to be one of \['frac', 'lastk', 'mean', 'pair_aware', 'window'\]; got 'median'",
        ),
        ({"last_k": 0}, r"Expected `last_k` to be an integer >= 1; got 0"),
        ({"top": 0}, r"Expected `top` to be an integer >= 1; got 0"),
        ({"top": True}, r"Expected `top` to be an integer >= 1; got True"),
        ({"last_k": 2.0}, r"Expected `last_k` to be an integer >= 1; got 2.0"),
        ({"top": 2, "threshold": 0.0}, r"Pass either `top` or `threshold`, not both"),
        ({"rule": "frac", "threshold": 1.5}, r"Expected `threshold` in \[0, 1\] for rule 'frac'"),
        ({"threshold": float("nan")}, r"Expected `threshold` to be a finite number"),
    ],
)
def test_bad_options(hand_run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flag_samples(hand_run, **kwargs)


def test_missing_scores(tmp_path, hand_run, write_run):
    (hand_run / "scores" / "alignment_0002.npy").unlink()
    with pytest.raises(RunDirError, match=r"no 'alignment' scores for epoch 2"):
        flag_samples(hand_run)
    metrics_only = write_run(tmp_path / "m", metrics=[{"test_acc": 0.5}, {"test_acc": 0.6}])
    with pytest.raises(RunDirError, match=r"has no per-sample alignment scores"):
        flag_samples(metrics_only)


def test_cli_error_is_one_line_exit_2(tmp_path, commands, capsys):
    assert commands(["flag", str(tmp_path / "nope")]) == 2
    assert "gwa flag: error: Run directory" in capsys.readouterr().err


def test_type_error_for_non_path():
    with pytest.raises(TypeError, match=r"Expected `run` to be a gwa.rundir.Run or a path; got type int"):
        flag_samples(3)


def test_a_failed_rewrite_keeps_the_earlier_csv(hand_run, tmp_path):
    out = tmp_path / "flagged.csv"
    flag_samples(hand_run).to_csv(out)
    before = out.read_text()
    broken = dataclasses.replace(flag_samples(hand_run, rule="mean"), predictions=np.zeros(2))  # too short
    with pytest.raises(IndexError):
        broken.to_csv(out)
    assert out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("flagged")) == ["flagged.csv"]
