"""Stop rules: select_epoch over a finished curve and the online EarlyStopper."""

import json
import logging
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwa import EarlyStopper, select_epoch

NAN = math.nan


# ---- select_epoch ---------------------------------------------------------------------------------------

def test_paper_rule_skips_the_first_tenth():
    # 10 epochs: floor(1.0) = 1 skipped, so the early peak at index 0 is not chosen.
    assert select_epoch([9, 1, 2, 3, 2, 1, 0, 0, 0, 0]) == 3
    assert select_epoch([9, 1, 2, 3, 2, 1, 0, 0, 0, 0], rule="max", warmup_frac=0.0) == 0
    # 19 epochs: floor(1.9) = 1, so index 1 is allowed; 20 epochs: floor(2.0) = 2, it is not.
    curve = [0.0, 5.0, 1.0] + [0.5] * 16
    assert select_epoch(curve) == 1
    assert select_epoch(curve + [0.5]) == 2
    # Fewer than 10 epochs skip nothing.
    assert select_epoch([3, 1, 2]) == 0


@pytest.mark.parametrize("frac", [0.1, 0.2, 0.35, 0.5, 0.7, 0.9])
def test_warmup_is_floor_of_the_decimal_fraction(frac):
    # For every length, the first floor(frac * n) epochs are skipped: a strictly decreasing curve picks exactly
    # that index. (0.7 * 90 is 62.99999 in binary: the skip must still be 63 epochs.)
    for n in range(1, 400):
        skip = math.floor(Fraction(str(frac)) * n)
        if skip < n:
            assert select_epoch(np.arange(n, 0, -1.0), rule="paper", warmup_frac=frac) == skip


def test_finetune_rule_takes_the_max_after_the_first_local_minimum():
    curve = [0, 9, 5, 3, 4, 6, 5, 2, 1, 0]  # warm-up skips index 0; first minimum at 3; max after it at 5
    assert select_epoch(curve, rule="finetune") == 5
    assert select_epoch(curve, rule="paper") == 1
    # A plateau counts as a minimum (its successor is not lower), and NaNs are stepped over.
    assert select_epoch([8, 4, 4, 7, 6], rule="finetune", warmup_frac=0.0) == 3
    assert select_epoch([8, NAN, 4, NAN, 3, 9, 1], rule="finetune", warmup_frac=0.0) == 5
    # Never rising again: the minimum is the last epoch.
    assert select_epoch([5, 4, 3, 2], rule="finetune", warmup_frac=0.0) == 3


def test_max_and_min_rules_ties_go_to_the_earliest():
    assert select_epoch([1, 3, 3, 2], rule="max", warmup_frac=0.0) == 1
    assert select_epoch([3, 1, 2, 1], rule="min", warmup_frac=0.0) == 1
    assert select_epoch([0.5, 0.5, 0.5], rule="paper") == 0


def test_non_finite_values_are_never_chosen():
    assert select_epoch([NAN, 1, NAN, 0.5], rule="max", warmup_frac=0.0) == 1
    assert select_epoch([NAN, 1, NAN, 0.5], rule="min", warmup_frac=0.0) == 3
    assert select_epoch([1, math.inf, 2], rule="max", warmup_frac=0.0) == 2
    assert select_epoch([1, -math.inf, 2], rule="min", warmup_frac=0.0) == 0


def test_select_epoch_errors():
    with pytest.raises(ValueError, match=r"`rule` to be one of \['finetune', 'max', 'min', 'paper'\]; got 'best'"):
        select_epoch([1, 2], rule="best")
    for frac in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"`warmup_frac` in \[0, 1\); got {frac}"):
            select_epoch([1, 2], warmup_frac=frac)
    with pytest.raises(ValueError, match=r"non-empty 1-D sequence; got shape=\(0,\)"):
        select_epoch([])
    with pytest.raises(ValueError, match=r"non-empty 1-D sequence; got shape=\(2, 2\)"):
        select_epoch([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"at least one finite value in `values` after the warm-up \(from index 0\); "
                                         r"got \[nan, nan\]"):
        select_epoch([NAN, NAN])
    with pytest.raises(ValueError, match=r"after the warm-up \(from index 5\); got \[nan, nan, nan, nan, nan\]"):
        select_epoch([1.0] * 5 + [NAN] * 5, warmup_frac=0.5)


# ---- EarlyStopper ---------------------------------------------------------------------------------------

def run(stopper, values):
    return [stopper.step(v) for v in values]


def test_docstring_example_and_patience():
    s = EarlyStopper(patience=2)
    assert run(s, [0.1, 0.3, 0.2, 0.25]) == [False, False, False, True]
    assert (s.best_epoch, s.best_value, s.stopped_epoch, s.should_stop) == (1, 0.3, 3, True)
    assert s.reason == "stopped at epoch 3: no improvement over 0.3 (epoch 1) in the last 2 epochs"


def test_ties_are_not_improvements_and_reason_strings():
    s = EarlyStopper(patience=3)
    assert run(s, [1.0, 1.0]) == [False, False]
    assert s.best_epoch == 0 and s.wait == 1
    assert s.reason == "epoch 1: 1/3 epochs without improvement"
    s.step(2.0)
    assert s.reason == "epoch 2: new best 2"


def test_min_delta():
    s = EarlyStopper(patience=2, min_delta=0.1)
    assert run(s, [1.0, 1.05, 1.2, 1.25, 1.3]) == [False, False, False, False, True]
    assert (s.best_epoch, s.best_value) == (2, 1.2)


def test_warmup_epochs_can_neither_be_best_nor_count():
    s = EarlyStopper(patience=2, warmup=2)
    assert run(s, [10.0, 10.0, 1.0, 2.0, 0.5, 0.5]) == [False] * 5 + [True]
    assert (s.best_epoch, s.best_value, s.stopped_epoch) == (3, 2.0, 5)
    s = EarlyStopper(patience=1, warmup=3)
    s.step(5.0)
    assert s.reason == "epoch 0: warm-up (3 epochs)" and s.best_epoch is None and s.wait == 0


def test_mode_min():
    s = EarlyStopper("min", patience=2, min_delta=0.01)
    assert run(s, [1.0, 0.5, 0.495, 0.6]) == [False, False, False, True]
    assert (s.best_epoch, s.best_value) == (1, 0.5)


def test_non_finite_values_count_as_no_improvement():
    s = EarlyStopper(patience=2)
    assert run(s, [NAN, 0.2, NAN, math.inf]) == [False, False, False, True]
    assert (s.best_epoch, s.best_value) == (1, 0.2)


def test_stop_on_non_finite(caplog):
    s = EarlyStopper(patience=5, stop_on_non_finite=True)
    with caplog.at_level(logging.INFO, logger="gwa._stopping"):
        assert run(s, [0.1, 0.2, NAN]) == [False, False, True]
    assert s.reason == "stopped at epoch 2: value nan is not finite"
    assert s.reason in caplog.text
    assert (s.best_epoch, s.best_value) == (1, 0.2)


def test_best_is_tracked_without_stopping_and_frozen_after_stopping():
    s = EarlyStopper(patience=10)
    assert not any(run(s, [0.1, 0.4, 0.3, 0.2]))
    assert (s.best_epoch, s.best_value, s.should_stop, s.stopped_epoch) == (1, 0.4, False, None)
    s = EarlyStopper(patience=1)
    assert run(s, [0.5, 0.4, 0.9, 1.0]) == [False, True, True, True]
    assert (s.best_epoch, s.best_value, s.stopped_epoch) == (0, 0.5, 1)


def test_explicit_epoch_numbers_and_reset():
    s = EarlyStopper(patience=2)
    s.step(0.1, epoch=10)
    s.step(0.3, epoch=11)
    assert s.best_epoch == 11 and s.epoch == 11
    s.reset()
    assert (s.epoch, s.best_epoch, s.wait, s.stopped_epoch, s.reason) == (-1, None, 0, None, "")
    assert math.isnan(s.best_value)


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "maximize"}, r"`mode` to be one of \['max', 'min'\]; got 'maximize'"),
    ({"patience": 0}, r"`patience` to be an integer >= 1; got 0"),
    ({"patience": 1.5}, r"`patience` to be an integer >= 1; got 1.5"),
    ({"warmup": -1}, r"`warmup` to be an integer >= 0; got -1"),
    ({"warmup": 0.5}, r"`warmup` to be an integer >= 0; got 0.5"),
    ({"min_delta": -0.1}, r"`min_delta` to be a finite number >= 0; got -0.1"),
    ({"min_delta": NAN}, r"`min_delta` to be a finite number >= 0; got nan"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopper(**kwargs)


def test_load_state_dict_refuses_other_settings():
    state = EarlyStopper(patience=3).state_dict()
    with pytest.raises(ValueError, match=r"Cannot load an EarlyStopper state with patience=3 into one with "
                                         r"patience=5"):
        EarlyStopper(patience=5).load_state_dict(state)
    with pytest.raises(ValueError, match=r"with mode='min' into one with mode='max'"):
        EarlyStopper().load_state_dict(EarlyStopper("min").state_dict())


def test_state_dict_is_json_safe_before_any_best():
    s = EarlyStopper(warmup=2)
    s.step(NAN)
    state = s.state_dict()
    assert state["best_value"] is None and state["best_epoch"] is None
    assert json.loads(json.dumps(state, allow_nan=False)) == state


curves = st.lists(st.one_of(st.floats(-10, 10), st.just(NAN), st.just(math.inf)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(curves, st.integers(0, 30), st.sampled_from(["max", "min"]), st.integers(1, 4), st.integers(0, 3),
       st.sampled_from([0.0, 0.5]), st.booleans())
def test_property_resume_from_state_dict_gives_identical_decisions(values, cut, mode, patience, warmup, min_delta,
                                                                   stop_on_non_finite):
    kwargs = {"mode": mode, "patience": patience, "warmup": warmup, "min_delta": min_delta,
              "stop_on_non_finite": stop_on_non_finite}
    whole = EarlyStopper(**kwargs)
    decisions = run(whole, values)
    first = EarlyStopper(**kwargs)
    head = run(first, values[:cut])
    resumed = EarlyStopper(**kwargs)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    assert head + run(resumed, values[cut:]) == decisions
    assert resumed.state_dict() == whole.state_dict()
    # The decisions follow the rule: stop the first time patience non-improving epochs after warm-up accrue.
    assert decisions == sorted(decisions)  # once stopped, always stopped
    if whole.best_epoch is not None:
        assert whole.best_epoch >= warmup and math.isfinite(whole.best_value)
        assert whole.best_value == values[whole.best_epoch]
