"""Diagnostics are never silent in a plain loop: ``EarlyStopper`` raises one ``RuntimeWarning`` per diagnostic when
its choice is made (the stop, or the last planned epoch) and keeps them in ``diagnostics``."""

from __future__ import annotations

import warnings

import pytest

import gwa
from gwa.policy import diagnose

# diagnose()'s own example: the alignment peaks at epoch 3 while the training accuracy is still 0.5.
GWA = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.03, 0.03, 0.03, 0.03]
ACC = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
ROWS = [{"gwa": g, "train_acc": a} for g, a in zip(GWA, ACC)]


def _gwa_warnings(caught) -> list[str]:
    return [
        str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "gwa:" in str(w.message)
    ]


def test_one_warning_per_diagnostic_at_the_last_planned_epoch():
    stopper = gwa.EarlyStopper(total_epochs=len(ROWS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for row in ROWS[:-1]:
            stopper.step(row)
        assert _gwa_warnings(caught) == [] and stopper.diagnostics == []  # no choice made yet
        stopper.step(ROWS[-1])
    expected = diagnose(ROWS, total_epochs=len(ROWS))
    assert [d.code for d in stopper.diagnostics] == [d.code for d in expected] == ["early_transient"]
    assert _gwa_warnings(caught) == [f"gwa: {d}" for d in expected]


def test_the_stop_is_judged_once():
    stopper = gwa.EarlyStopper(patience=3, total_epochs=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stops = [stopper.step(row) for row in ROWS]
    assert (
        stops.index(True) == 5 and stopper.stopped_epoch == 6
    )  # best epoch 3, then 3 epochs without a new best
    expected = diagnose(ROWS[:6], total_epochs=20)
    assert stopper.diagnostics == expected and len(expected) >= 1
    assert len(_gwa_warnings(caught)) == len(expected)  # not again at the later steps


def test_warn_false_and_a_restored_state_are_silent_and_judge_is_explicit():
    quiet = gwa.EarlyStopper(total_epochs=len(ROWS), warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for row in ROWS:
            quiet.step(row)
        assert quiet.diagnostics == []
        restored = gwa.EarlyStopper(total_epochs=len(ROWS))
        restored.load_state_dict(quiet.state_dict())  # replayed: judged in the run that made the choice
    assert restored.best_epoch == quiet.best_epoch == 3
    with pytest.warns(RuntimeWarning, match=r"gwa: \[early_transient\]"):
        assert [d.code for d in quiet.judge()] == ["early_transient"]


def test_numbers_alone_are_judged_without_the_accuracy_checks():
    stopper = gwa.EarlyStopper(total_epochs=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for v in [0.1, 0.2, 0.3, 0.4, 0.5]:
            stopper.step(v)
    assert [d.code for d in stopper.diagnostics] == ["still_rising"]
    assert len(_gwa_warnings(caught)) == 1
