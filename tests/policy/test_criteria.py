"""The core policy's criteria: select_epoch / select_all over hand-built histories (1-based epochs)."""

import math
from fractions import Fraction

import numpy as np
import pytest

import gwa
from gwa import policy


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": e + 1, **{k: v[e] for k, v in cols.items() if v[e] is not None}} for e in range(n)]


# 10 epochs: warm-up skips epoch 1 (floor(0.1 * 10) = 1).
PAPER = [9.0, 0.2, 0.3, 0.25, -3.3, 0.9, 0.4, 0.35, 0.3, 0.28]
FLAG = [False, False, False, False, True, True, False, False, False, False]
MEAN = [0.5, 0.3, 0.4, 0.45, 0.42, 0.41, 0.40, 0.39, 0.38, 0.37]
KURT = [0.0, 0.0, 0.0, 1.0, -1.5, -1.5, 0.0, 0.0, 0.0, 0.0]
DEFAULT = [m / (k + 3) for m, k in zip(MEAN, KURT)]
TEST = [0.5, 0.6, 0.7, 0.72, 0.71, 0.69, 0.68, 0.67, 0.66, 0.65]
VAL = [0.4, 0.6, 0.65, 0.66, 0.70, 0.62, 0.6, 0.6, 0.6, 0.6]
VALC = [0.4, 0.6, 0.75, 0.66, 0.70, 0.62, 0.6, 0.6, 0.6, 0.6]
PC = [None, 90, 60, 40, 35, 38, 50, 70, 80, 90]
GD = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 1.0, 1.0]


def test_every_criterion_on_a_hand_built_run():
    rows = _rows(
        gwa=DEFAULT,
        gwa_paper=PAPER,
        gwa_paper_flagged=FLAG,
        align_mean=MEAN,
        align_excess_kurtosis=KURT,
        test_acc=TEST,
        val_acc=VAL,
        val_acc_clean=VALC,
        prediction_changes=PC,
        grad_disparity=GD,
    )
    got = policy.select_all(rows)
    # The class-aware criteria and the veto need `class_evidence` / `veto_acc` (tests/policy/test_class_criteria.py)
    needs_more = {"class_evidence", "veto_acc"}
    assert list(got) == [name for name, c in policy.CRITERIA.items() if c.key not in needs_more]
    assert got == {
        "gwa_paper": 6,  # verbatim: 0.9 right after the pole (epoch 1's 9.0 is in the warm-up)
        "gwa": 5,  # mean / (kurtosis + 3): 0.42 / 1.5 = 0.28 at epoch 5 (0.45 / 4 at epoch 4)
        "align_mean": 4,  # 0.45, epoch 1 skipped
        "val": 5,
        "val_clean": 3,
        "labelwave": 6,  # trailing 3-mean: 63.3, 45, 37.7, 41 -> minimum at epoch 6
        "grad_disparity": 3,  # minimum 3.0 at epoch 3, 5 epochs without a new one -> stops at 8
        "last": 10,
        "oracle": 4,
    }


def test_history_of_summaries_reads_the_same_values_as_rows():
    rng = np.random.default_rng(0)
    history = [
        gwa.summarize(rng.normal(m, s, 400)) for m, s in [(0.9, 0.1), (0.1, 0.3), (0.3, 0.2), (0.2, 0.2)] * 5
    ]
    rows = [s.metrics() for s in history]
    for name in policy.MONITORABLE:
        assert gwa.select_epoch(history, name) == gwa.select_epoch(rows, name)
    values = [s.gwa for s in history]
    assert gwa.select_epoch(history) == gwa.select_epoch(values) == 1 + 2 + int(np.argmax(values[2:]))


def test_the_default_value_is_the_summary_field():
    s = gwa.summarize(np.r_[np.full(30, 0.8), np.full(10, -0.2), np.linspace(0, 1, 17)])
    assert s.gwa == pytest.approx(s.mean / (s.excess_kurtosis + 3.0), rel=1e-12)
    assert s.gwa_paper == pytest.approx(s.mean / (s.excess_kurtosis + 1.2), rel=1e-12)
    assert s.metrics()["gwa"] == s.gwa and s.metrics()["gwa_paper"] == s.gwa_paper


def test_only_criteria_whose_inputs_exist():
    rows = _rows(gwa_paper=PAPER, test_acc=TEST)
    assert set(policy.select_all(rows)) == {"gwa_paper", "last", "oracle"}
    assert policy.select_all([]) == {}
    assert "val" not in policy.select_all(_rows(gwa=PAPER, val_acc=[None] * 10))
    with pytest.raises(ValueError, match="Criterion 'val' needs 'val_acc' in the history; no epoch has it"):
        gwa.select_epoch(rows, "val")


def test_a_criterion_that_cannot_choose_is_left_out():
    # the default's value known only in the warm-up (epochs 1-2 of 20): nothing to choose from
    rows = _rows(align_mean=[0.1] * 20, gwa=[0.0, 0.0] + [None] * 18, test_acc=[0.5] * 20)
    got = policy.select_all(rows)
    assert "gwa" not in got and got["align_mean"] == 3 and got["oracle"] == 1


def test_planned_epochs_fix_the_warm_up():
    values = [9.0, 1.0, 2.0]  # 3 of 20 planned epochs: warm-up = 2 epochs
    rows = _rows(gwa=values, gwa_paper=values)
    assert policy.select_all(rows, total_epochs=20)["gwa"] == 3
    assert policy.select_all(rows)["gwa"] == 1  # a 3-epoch run has no warm-up
    with pytest.raises(
        ValueError, match=r"`total_epochs` to be an integer >= the 3 epochs in the history; got 2"
    ):
        gwa.select_epoch(rows, total_epochs=2)


def test_paper_rule_skips_the_first_tenth():
    assert gwa.select_epoch([9, 1, 2, 3, 2, 1, 0, 0, 0, 0]) == 4
    curve = [0.0, 5.0, 1.0] + [0.5] * 16  # 19 epochs: floor(1.9) = 1, so epoch 2 is allowed; 20: it is not
    assert gwa.select_epoch(curve) == 2
    assert gwa.select_epoch([*curve, 0.5]) == 3
    assert gwa.select_epoch([3, 1, 2]) == 1  # fewer than 10 epochs skip nothing


def test_warmup_is_the_floor_of_a_tenth_exactly():
    for n in range(400):
        assert policy.warmup_epochs(n) == math.floor(Fraction(1, 10) * n)
        if n:
            # a strictly decreasing curve picks the first epoch after the warm-up
            assert gwa.select_epoch(np.arange(n, 0, -1.0)) == policy.warmup_epochs(n) + 1
    with pytest.raises(ValueError, match=r"`total_epochs` to be an integer >= 0; got -1"):
        policy.warmup_epochs(-1)


def test_finetune_rule_takes_the_max_after_the_first_local_minimum():
    curve = [0, 9, 5, 3, 4, 6, 5, 2, 1, 0]  # warm-up skips epoch 1; first minimum at epoch 4; max after at 6
    assert gwa.select_epoch(curve, finetune=True) == 6
    assert gwa.select_epoch(curve) == 2
    # A plateau counts as a minimum (its successor is not lower), and NaNs are stepped over.
    assert policy.choose([8, 4, 4, 7, 6], finetune=True) == 3
    assert policy.choose([8, math.nan, 4, math.nan, 3, 9, 1], finetune=True) == 5
    assert policy.choose([5, 4, 3, 2], finetune=True) == 3  # never rising again: the last epoch


def test_non_finite_values_are_never_chosen_and_ties_go_early():
    assert policy.choose([math.nan, 1, math.nan, 0.5]) == 1
    assert policy.choose([1, math.inf, 2]) == 2
    assert policy.choose([0.5, 0.5, 0.5]) == 0
    with pytest.raises(
        ValueError,
        match=r"at least one finite value after the warm-up \(from epoch 6\); "
        r"got \[nan, nan, nan, nan, nan\]",
    ):
        policy.choose([1.0] * 5 + [math.nan] * 5, warmup=5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`criterion` to be one of \['gwa_paper', 'gwa', .*\]; got 'best'"):
        gwa.select_epoch([1.0, 2.0], "best")
    with pytest.raises(ValueError, match="Plain values need a per-epoch-value criterion"):
        gwa.select_epoch([1.0, 2.0], "oracle")
    with pytest.raises(
        TypeError, match=r"`history\[1\]` to be an EpochSummary or a metric row \(dict\); got str"
    ):
        policy.as_rows([{"gwa": 1.0}, "x"])
    with pytest.raises(ValueError, match="non-empty `history`"):
        gwa.select_epoch([])


def test_series_reads_nulls_and_booleans():
    got = policy.series([{"epoch": 1, "x": True}, {"epoch": 2, "x": None}, {"epoch": 3}], "x")
    np.testing.assert_array_equal(got, [1.0, math.nan, math.nan])
