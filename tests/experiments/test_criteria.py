import math

import numpy as np
import pytest

from gwa.experiments import criteria


def _rows(**cols):
    n = len(next(iter(cols.values())))
    return [{"epoch": e + 1, **{k: v[e] for k, v in cols.items() if v[e] is not None}} for e in range(n)]


# 10 epochs: warm-up skips epoch 1 (floor(0.1 * 10) = 1).
GWA = [9.0, 0.2, 0.3, 0.25, -3.3, 0.9, 0.4, 0.35, 0.3, 0.28]
FLAG = [False, False, False, False, True, True, False, False, False, False]
MEAN = [0.5, 0.3, 0.4, 0.45, 0.42, 0.41, 0.40, 0.39, 0.38, 0.37]
TEST = [0.5, 0.6, 0.7, 0.72, 0.71, 0.69, 0.68, 0.67, 0.66, 0.65]
VAL = [0.4, 0.6, 0.65, 0.66, 0.70, 0.62, 0.6, 0.6, 0.6, 0.6]
VALC = [0.4, 0.6, 0.75, 0.66, 0.70, 0.62, 0.6, 0.6, 0.6, 0.6]
PC = [None, 90, 60, 40, 35, 38, 50, 70, 80, 90]
GD = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 1.0, 1.0]
KURT = [0.0, 0.0, 0.0, 1.0, -1.5, -1.5, 0.0, 0.0, 0.0, 0.0]


def test_every_criterion_on_a_hand_built_run():
    rows = _rows(gwa=GWA, gwa_flagged=FLAG, align_mean=MEAN, align_excess_kurtosis=KURT, test_acc=TEST, val_acc=VAL,
                 val_acc_clean=VALC, prediction_changes=PC, grad_disparity=GD)
    got = criteria.select_all(rows)
    assert list(got) == list(criteria.NAMES)
    assert got == {
        "gwa_paper": 6,       # verbatim: 0.9 right after the pole (epoch 1's 9.0 is in the warm-up)
        "gwa": 5,             # mean / (kurtosis + 3): 0.42 / 1.5 = 0.28 at epoch 5 (0.45 / 4 at epoch 4)
        "align_mean": 4,      # 0.45, epoch 1 skipped
        "val": 5, "val_clean": 3,
        "labelwave": 6,       # trailing 3-mean: 63.3, 45, 37.7, 41 -> minimum at epoch 6
        "grad_disparity": 3,  # minimum 3.0 at epoch 3, 5 epochs without a new one -> stops at 8
        "last": 10, "oracle": 4,
    }


def test_only_criteria_whose_inputs_exist():
    rows = _rows(gwa=GWA, test_acc=TEST)
    assert set(criteria.select_all(rows)) == {"gwa_paper", "last", "oracle"}
    assert criteria.select_all([]) == {}
    nulls = _rows(gwa=GWA, val_acc=[None] * 10)
    assert "val" not in criteria.select_all(nulls)


def test_guarded_paper_rule_skips_flagged_epochs():
    rows = _rows(gwa=GWA, gwa_flagged=FLAG)
    assert rows[criteria.guarded_paper(rows)]["epoch"] == 7  # epochs 5, 6 flagged: 0.4 at epoch 7
    unflagged = _rows(gwa=GWA)
    assert criteria.guarded_paper(unflagged) == criteria.select_all(unflagged)["gwa_paper"] - 1 == 5
    every = _rows(gwa=[-3.0, -1.0, -2.0], gwa_flagged=[True, True, True])
    with pytest.raises(ValueError, match="finite value"):
        criteria.guarded_paper(every)


def test_a_criterion_that_cannot_choose_is_left_out():
    # kurtosis known only in the warm-up (epochs 1-2 of 20): the default has nothing to choose from
    rows = _rows(align_mean=[0.1] * 20, align_excess_kurtosis=[0.0, 0.0] + [None] * 18, test_acc=[0.5] * 20)
    got = criteria.select_all(rows)
    assert "gwa" not in got and got["align_mean"] == 3 and got["oracle"] == 1


def test_padded_rows_count_toward_the_warm_up():
    values = [9.0, 1.0, 2.0] + [None] * 17  # 3 of 20 planned epochs: warm-up = 2 epochs
    rows = _rows(gwa=values, align_mean=values, align_excess_kurtosis=[0.0] * 3 + [None] * 17)
    got = criteria.select_all(rows)
    assert got["gwa"] == 3 and got["gwa_paper"] == 3
    assert got["last"] == 20


def test_finetune_rule_waits_for_the_first_minimum():
    gwa = [0.9, 0.8, 0.5, 0.3, 0.4, 0.6, 0.5, 0.2, 0.1, 0.1]  # dip at epoch 4, then max 0.6 at epoch 6
    rows = _rows(gwa=gwa, align_mean=gwa, align_excess_kurtosis=[0.0] * 10)
    assert criteria.select_all(rows, finetune=True)["gwa_paper"] == 6
    assert criteria.select_all(rows, finetune=True)["gwa"] == 6
    assert criteria.select_all(rows, finetune=True)["align_mean"] == 6
    assert criteria.select_all(rows)["gwa_paper"] == 2


def test_series_reads_nulls_and_booleans():
    got = criteria.series([{"epoch": 1, "x": True}, {"epoch": 2, "x": None}, {"epoch": 3}], "x")
    np.testing.assert_array_equal(got, [1.0, math.nan, math.nan])


def test_research_candidates_on_hand_built_rows():
    # 10 epochs, warm-up skips epoch 1.
    mean = [0.9, 0.2, 0.3, 0.25, 0.22, 0.21, 0.26, 0.24, 0.2, 0.2]
    kurt = [0.0, 0.0, 3.0, -1.5, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    rows = _rows(align_mean=mean, align_excess_kurtosis=kurt, gwa=[1.0] * 10, gwa_flagged=[True] * 10)
    with pytest.raises(ValueError, match="finite value"):
        criteria.CANDIDATES["gwa_guarded"](rows)
    pick = {name: rows[f(rows)]["epoch"] for name, f in criteria.CANDIDATES.items() if name != "gwa_guarded"}
    assert set(pick) == {"gwa_guarded_or_mean", "gwa_pearson_finetune", "align_mean_finetune", "align_mean_smooth3"}
    # Pearson ratio (the default): 0.3/6 = 0.05 at epoch 3, 0.25/1.5 = 0.167 at epoch 4, 0.22/1.5 = 0.147 at 5
    assert criteria.gwa_default(rows) == 3 and pick["gwa_pearson_finetune"] == 4
    # first local minimum after the warm-up: epoch 2 (0.2 -> 0.3 rises), then the max after it: epoch 3
    assert pick["align_mean_finetune"] == 3
    # trailing 3-mean from epoch 3: 0.467, 0.25, 0.257, 0.227, 0.23, 0.237, 0.233, 0.213 -> epoch 3
    assert pick["align_mean_smooth3"] == 3
    # every GWA flagged: the guarded rule cannot choose, the fallback takes the mean alignment
    assert pick["gwa_guarded_or_mean"] == 3


def test_default_value_is_the_curve_the_default_maximises():
    rows = _rows(align_mean=MEAN, align_excess_kurtosis=KURT)
    values = [criteria.default_value(r) for r in rows]
    assert values[4] == pytest.approx(0.42 / 1.5)
    assert criteria.gwa_default(rows) == 1 + int(np.argmax(values[1:]))  # after the one-epoch warm-up
    assert math.isnan(criteria.default_value({"epoch": 1, "align_mean": 0.1}))
