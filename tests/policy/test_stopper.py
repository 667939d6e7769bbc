"""The online decision object: same epoch as the post-hoc choice, reasons, state."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gwa
from gwa import EarlyStopper, StopReason


def test_reasons_and_messages_over_a_run():
    s = EarlyStopper(patience=2, total_epochs=10)
    steps = [s.step(v) for v in [0.9, 0.1, 0.3, 0.2, 0.25]]
    assert steps == [False, False, False, False, True]
    assert (s.best_epoch, s.best_value, s.stopped_epoch, s.reason) == (
        3,
        0.3,
        5,
        StopReason.PATIENCE_EXHAUSTED,
    )
    assert s.message == "stop at epoch 5: no new best for 2 epochs since epoch 3 (gwa 0.3)"
    assert s.step(5.0) is True and s.stopped_epoch == 5  # stays stopped; still records


def test_each_reason():
    s = EarlyStopper(patience=3, total_epochs=20)
    s.step(0.5)
    assert s.reason is StopReason.WARMUP and s.message == "epoch 1: warm-up (epochs 1-2 are never chosen)"
    s.step(0.6)
    s.step(0.1)
    assert s.reason is StopReason.IMPROVED and s.best_epoch == 3
    s.step(math.nan)
    assert s.reason is StopReason.UNDEFINED and "1/3 epochs without a new best" in s.message
    s.step(0.05)
    assert s.reason is StopReason.NOT_IMPROVED
    assert s.message == "epoch 5: best epoch 3 (gwa 0.1), 2/3 epochs without a new best"
    assert not s.should_stop


def test_logged_value_is_nan_in_the_warm_up_only():
    s = EarlyStopper(total_epochs=20)
    s.step(0.4)
    assert math.isnan(s.logged_value())
    s.step(0.3)
    s.step(0.2)
    assert s.logged_value() == 0.2


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(-1, 1), st.just(math.nan)), min_size=1, max_size=40),
    extra=st.integers(0, 20),
    patience=st.one_of(st.none(), st.integers(1, 6)),
    finetune=st.booleans(),
)
def test_online_best_equals_the_post_hoc_choice(values, extra, patience, finetune):
    total = len(values) + extra
    s = EarlyStopper(patience=patience, total_epochs=total, finetune=finetune)
    for v in values:
        if s.step(v):  # a trainer stops here
            break
    seen = values[: s.epoch]
    try:
        expected = gwa.select_epoch(seen, total_epochs=total, finetune=finetune)
    except ValueError:
        expected = None
    assert s.best_epoch == expected
    # the stop fires exactly when the best epoch lies `patience` epochs behind (counted after the warm-up)
    if s.stopped_epoch is not None:
        assert s.stopped_epoch == s.epoch
        assert s.stopped_epoch - max(s.best_epoch or 0, s.warmup) == patience


def test_without_total_epochs_it_agrees_with_the_history_so_far():
    values = [0.9, 0.1, 0.2, 0.15, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    s = EarlyStopper()
    for i, v in enumerate(values, start=1):
        s.step(v)
        assert s.best_epoch == gwa.select_epoch(values[:i])


def test_summaries_rows_and_numbers_are_accepted():
    rng = np.random.default_rng(1)
    history = [gwa.summarize(rng.normal(m, 0.2, 300)) for m in (0.1, 0.4, 0.2)]
    a, b, c = EarlyStopper("gwa_paper"), EarlyStopper("gwa_paper"), EarlyStopper("gwa_paper")
    for s in history:
        a.step(s)
        b.step(s.metrics())
        c.step(s.gwa_paper)
    assert a.values == b.values == c.values
    with pytest.raises(
        TypeError, match="Expected an EpochSummary, a metric row \\(dict\\) or a number; got str"
    ):
        a.step("0.3")


def test_state_round_trip_resumes_the_same_decision():
    values = [0.2, 0.1, 0.5, 0.4, 0.3, 0.6, 0.2, 0.1, 0.1, 0.1]
    full = EarlyStopper(patience=3, total_epochs=10)
    part = EarlyStopper(patience=3, total_epochs=10)
    for v in values[:5]:
        part.step(v)
    resumed = EarlyStopper(patience=3, total_epochs=10)
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    for v in values:
        full.step(v)
    for v in values[5:]:
        resumed.step(v)
    assert (
        (resumed.best_epoch, resumed.stopped_epoch, resumed.message)
        == (full.best_epoch, full.stopped_epoch, full.message)
        == (6, 9, resumed.message)
    )


def test_bad_arguments_and_states_are_refused():
    with pytest.raises(
        ValueError, match=r"`criterion` to be one of \['gwa_paper', 'gwa', 'align_mean'\].*got 'val'"
    ):
        EarlyStopper("val")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`patience` to be an integer >= 1 or None"):
            EarlyStopper(patience=bad)
    with pytest.raises(ValueError, match="`total_epochs` to be an integer >= 1 or None; got 0"):
        EarlyStopper(total_epochs=0)
    s = EarlyStopper(total_epochs=2)
    s.step(0.1)
    s.step(0.2)
    with pytest.raises(ValueError, match="epoch 3 of a run planned for 2 epochs"):
        s.step(0.3)
    state = EarlyStopper(patience=2).state_dict()
    with pytest.raises(ValueError, match="format 2; got format 99"):
        EarlyStopper(patience=2).load_state_dict({**state, "format": 99})
    with pytest.raises(ValueError, match="patience=2 into one with patience=3"):
        EarlyStopper(patience=3).load_state_dict(state)
    with pytest.raises(ValueError, match="list of numbers or null"):
        EarlyStopper(patience=2).load_state_dict({**state, "values": ["x"]})
    with pytest.raises(ValueError, match=r"`stopped_epoch` in 1..0 or null; got 4"):
        EarlyStopper(patience=2).load_state_dict({**state, "stopped_epoch": 4})


def test_a_state_resumes_under_a_longer_plan():
    values = [0.9, 0.1, 0.3, 0.2]
    short = EarlyStopper(total_epochs=4)
    for v in values:
        short.step(v)
    assert short.best_epoch == 1  # a 4-epoch run has no warm-up
    longer = EarlyStopper(total_epochs=20)
    longer.load_state_dict(short.state_dict())
    assert longer.best_epoch == gwa.select_epoch(values, total_epochs=20) == 3  # warm-up now 2 epochs
    with pytest.raises(ValueError, match="state of 4 epochs into one planned for 3 epochs"):
        EarlyStopper(total_epochs=3).load_state_dict(short.state_dict())
