"""Class-aware candidates and the tiny-split veto: choices on hand-built runs, never outside the candidate set,
and the same answer online (EarlyStopper) and post hoc (choose_with_veto, select_epoch)."""

import math

import numpy as np
import pytest
from tests.policy._noisy_runs import SWAPS, run

import gwa
from gwa import policy
from gwa.policy import VETO_CANDIDATES, choose_with_veto

# Flipped labels memorised from epoch 6 on (half of them), then all: the classes' confident negatives collapse.
FITTED = [0, 0, 0, 0, 0, 0.5, 0.8, 1, 1, 1]


def test_class_memorisation_stops_before_the_flipped_labels_are_fitted():
    rows = run(SWAPS, fitted=FITTED)
    # class 1's confidently negative share: 0.3 through epoch 5, 0.12 at epoch 6 (< KEPT = 0.5 of its peak)
    assert gwa.select_epoch(rows, "class_memorisation") == 5
    slow = run(
        SWAPS, fitted=[0, 0, 0, 0, 0, 0.3, 0.3, 0.3, 0.3, 0.3]
    )  # 30% fitted: a share of 0.7 of the peak
    assert gwa.select_epoch(slow, "class_memorisation") == 10
    assert gwa.select_epoch(run(SWAPS), "class_memorisation") == 10  # never fitted: the last epoch


def test_class_ceiling_stops_when_a_noisy_class_fits_above_one_minus_its_noise():
    rows = run(SWAPS, fitted=FITTED)
    # Class 0: 30% noise; its training accuracy 0.7 + 0.3 * 0.5 = 0.85 > 0.72 at epoch 6.
    assert gwa.select_epoch(rows, "class_ceiling") == 5
    assert gwa.select_epoch(run(SWAPS), "class_ceiling") == 10


def test_class_agreement_is_the_later_of_the_two_and_class_gwa_chooses():
    rows = run(SWAPS, fitted=FITTED)
    assert gwa.select_epoch(rows, "class_agreement") == 5
    assert 2 <= gwa.select_epoch(rows, "class_gwa") <= 10
    got = policy.select_all(rows)
    assert {"class_memorisation", "class_ceiling", "class_gwa", "class_agreement"} <= set(got)
    assert "veto" not in got  # no veto_acc in the rows


def test_class_criteria_need_evidence():
    with pytest.raises(ValueError, match="needs 'class_evidence'"):
        gwa.select_epoch([{"gwa": 0.1}, {"gwa": 0.2}], "class_memorisation")


def _veto_rows(seed):
    rng = np.random.default_rng(seed)
    rows = run(SWAPS, fitted=FITTED)
    for r in rows:
        r["veto_acc"] = float(rng.uniform(0.5, 0.9))
    return rows


@pytest.mark.parametrize("seed", range(8))
def test_the_veto_never_picks_outside_the_candidates_and_takes_their_best_split_accuracy(seed):
    rows = _veto_rows(seed)
    epoch, by = choose_with_veto(rows)
    candidates = {name: gwa.select_epoch(rows, name) for name in VETO_CANDIDATES}
    assert candidates[by] == epoch
    assert rows[epoch - 1]["veto_acc"] == max(rows[e - 1]["veto_acc"] for e in candidates.values())
    assert gwa.select_epoch(rows, "veto") == epoch


@pytest.mark.parametrize("seed", range(8))
def test_online_equals_post_hoc(seed):
    rows = _veto_rows(seed)
    stopper = gwa.EarlyStopper(total_epochs=10, veto=True)
    for r in rows:
        row = {k: v for k, v in r.items() if k != "veto_acc"}
        stopper.step(row, veto_accuracy=r["veto_acc"])
    assert stopper.best_epoch == choose_with_veto(rows, total_epochs=10)[0]
    assert set(stopper.candidate_epochs.values()) >= {stopper.best_epoch}
    # the state replays to the same decision
    again = gwa.EarlyStopper(total_epochs=10, veto=True)
    again.load_state_dict(stopper.state_dict())
    assert again.best_epoch == stopper.best_epoch and again.candidate_epochs == stopper.candidate_epochs


def test_online_with_patience_equals_post_hoc_on_the_epochs_seen():
    rows = _veto_rows(3)
    stopper = gwa.EarlyStopper(total_epochs=10, patience=2, veto=True)
    seen = []
    for r in rows:
        seen.append(r)
        if stopper.step({k: v for k, v in r.items() if k != "veto_acc"}, veto_accuracy=r["veto_acc"]):
            break
    assert stopper.should_stop and len(seen) < 10
    assert stopper.best_epoch == choose_with_veto(seen, total_epochs=10)[0]


def test_the_veto_reason_and_message():
    values = [0.1, 0.5, 0.4, 0.3, 0.2, 0.2]
    accs = [0.5, 0.6, 0.7, 0.6, 0.65, 0.9]
    stopper = gwa.EarlyStopper(total_epochs=6, veto=("gwa", "last"))
    for v, a in zip(values, accs):
        stopper.step(v, veto_accuracy=a)
    assert stopper.best_epoch == 6 and stopper.reason is gwa.StopReason.VETO
    assert stopper.message == (
        "epoch 6: the veto split keeps epoch 6 (last's choice, split accuracy 90.0%) over gwa's epoch 2"
    )
    plain = gwa.EarlyStopper(total_epochs=6)
    for v in values:
        plain.step(v)
    assert plain.best_epoch == 2  # without the veto, as before


def test_a_nan_split_accuracy_is_never_preferred():
    stopper = gwa.EarlyStopper(total_epochs=4, veto=("gwa", "last"))
    for v, a in zip([0.1, 0.5, 0.2, 0.3], [0.5, 0.6, 0.7, math.nan]):
        stopper.step(v, veto_accuracy=a)
    assert stopper.best_epoch == 2


def test_veto_arguments_are_checked():
    with pytest.raises(ValueError, match="without a veto"):
        gwa.EarlyStopper().step(0.1, veto_accuracy=0.5)
    with pytest.raises(ValueError, match=r"`veto_accuracy` in \[0, 1\]"):
        gwa.EarlyStopper(veto=True).step(0.1, veto_accuracy=50.0)
    with pytest.raises(ValueError, match="`veto` to be True, False or a tuple"):
        gwa.EarlyStopper(veto="gwa")
    with pytest.raises(ValueError, match="other than 'veto'"):
        gwa.EarlyStopper(veto=("gwa", "veto"))
    with pytest.raises(ValueError, match="Cannot load an EarlyStopper state with veto"):
        gwa.EarlyStopper(veto=True).load_state_dict(gwa.EarlyStopper().state_dict())
