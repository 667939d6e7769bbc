"""EpochMonitor: best epoch = the core policy's choice, stop rule = EarlyStopper, logged values, resume, run dir,
errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gwa
from gwa import policy
from gwa.integrations import EpochMonitor
from gwa.rundir import load_run
from gwa.torch import EpochResult

N = 40


def results(means, seed=0):
    """Epoch results whose scores have the given means (normal spread, so GWA follows the mean)."""
    rng = np.random.default_rng(seed)
    out = []
    for epoch, mean in enumerate(means, start=1):
        scores = np.clip(rng.normal(mean, 0.2, N), -1, 1).astype(np.float32)
        out.append(EpochResult(epoch=epoch, summary=gwa.summarize(scores.astype(np.float64)), scores=scores))
    return out


MEANS = [0.30, 0.10, 0.20, 0.25, 0.22, 0.21, 0.20, 0.35, 0.10, 0.05]


@pytest.mark.parametrize("monitor", ["gwa", "gwa_paper", "align_mean"])
def test_best_epoch_is_the_criterion_choice_at_every_epoch(monitor):
    m = EpochMonitor(monitor=monitor)
    m.start(max_epochs=len(MEANS), num_samples=N, write=False, framework="test")
    for k, result in enumerate(results(MEANS), start=1):
        m.end_epoch(result)
        if k == 1:  # the warm-up of 10 planned epochs: nothing can be chosen yet
            assert m.best_epoch is None
            with pytest.raises(
                ValueError, match=r"at least one finite value after the warm-up \(from epoch 2\); got \[\]"
            ):
                gwa.select_epoch(m.rows, monitor, total_epochs=len(MEANS))
            continue
        assert m.best_epoch == gwa.select_epoch(m.rows, monitor, total_epochs=len(MEANS))
        assert m.best_epoch != 1
    assert (
        m.best_epoch == gwa.select_epoch(m.rows, monitor, total_epochs=len(MEANS)) and m.stopped_epoch is None
    )
    assert m.best_epoch == policy.select_all(m.rows, total_epochs=len(MEANS))[monitor]


def test_stop_rule_is_the_early_stopper_with_the_planned_warm_up():
    m = EpochMonitor(monitor="align_mean", patience=2)
    m.start(max_epochs=len(MEANS), num_samples=N, write=False, framework="test")
    stopper = gwa.EarlyStopper(
        "align_mean", patience=2, total_epochs=len(MEANS)
    )  # warm-up: floor(0.1 * 10) = 1
    assert stopper.warmup == 1
    for result in results(MEANS):
        row, stop = m.end_epoch(result)
        assert stop == stopper.step(row["align_mean"])
        assert m.best_epoch == stopper.best_epoch and m.stopper.reason is stopper.reason
        if stop:
            break
    assert m.stopped_epoch == stopper.stopped_epoch < len(MEANS)
    assert stopper.reason is gwa.StopReason.PATIENCE_EXHAUSTED
    assert m.stopped_epoch - m.best_epoch == 2  # 1-based epochs throughout


def test_log_values_are_the_default_value_nan_in_the_warm_up():
    m = EpochMonitor()
    m.start(max_epochs=20, num_samples=N, write=False, framework="test")  # warm-up: epochs 1-2
    for result in results(MEANS):
        m.end_epoch(result)
        logged = m.log_values(result.summary, result.epoch)
        s = result.summary
        assert list(logged) == [
            "gwa",
            "gwa_paper",
            "gwa_paper_flagged",
            "align_mean",
            "align_std",
            "align_excess_kurtosis",
        ]
        if result.epoch <= 2:
            assert math.isnan(logged["gwa"])
        else:
            assert logged["gwa"] == s.gwa == pytest.approx(s.mean / (s.excess_kurtosis + 3))
        np.testing.assert_equal(
            logged["gwa"], m.stopper.logged_value()
        )  # the core's own logged value (NaN == NaN)
        assert logged["gwa_paper"] == s.gwa_paper and logged["gwa_paper_flagged"] == float(s.flagged)
        assert (logged["align_mean"], logged["align_std"], logged["align_excess_kurtosis"]) == (
            s.mean,
            s.std,
            s.excess_kurtosis,
        )
    # So a trainer keeping the highest logged `gwa` keeps the monitor's best epoch.
    logged = [m.log_values(r.summary, r.epoch)["gwa"] for r in results(MEANS)]
    assert 1 + int(np.nanargmax(logged)) == m.best_epoch


def test_resume_from_state_gives_the_same_decisions_and_run_dir(tmp_path):
    rs = results(MEANS)
    full = EpochMonitor(patience=3, run_dir=tmp_path / "a")
    full.start(max_epochs=10, num_samples=N, write=True, framework="test")
    first = EpochMonitor(patience=3, run_dir=tmp_path / "b")
    first.start(max_epochs=10, num_samples=N, write=True, framework="test")
    for r in rs[:4]:
        full.end_epoch(r)
        first.end_epoch(r)
    state = first.state_dict()
    with open(tmp_path / "b" / "metrics.jsonl", "a") as fh:  # an epoch logged after the checkpoint
        fh.write('{"epoch": 5}\n')
    resumed = EpochMonitor(patience=3, run_dir=tmp_path / "b")
    resumed.load_state_dict(state)
    resumed.start(max_epochs=10, num_samples=N, write=True, framework="test")
    for r in rs[4:]:
        a, b = full.end_epoch(r), resumed.end_epoch(r)
        assert {k: v for k, v in a[0].items() if k != "wall_time"} == {
            k: v for k, v in b[0].items() if k != "wall_time"
        }
        assert a[1] == b[1]
    full.finish()
    resumed.finish()
    ra, rb = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert ra.epochs == rb.epochs == list(range(1, 11))
    np.testing.assert_array_equal(ra.score_matrix(), rb.score_matrix())
    assert ra.summary["criteria"] == rb.summary["criteria"] and rb.summary["best_epoch"] == full.best_epoch
    assert ra.summary["criteria"] == {
        k: {"epoch": e} for k, e in policy.select_all(ra.metrics, total_epochs=10).items()
    }
    assert (
        rb.summary["stopped_epoch"] == full.stopped_epoch and rb.summary["decision"] == full.stopper.message
    )
    assert rb.summary["monitor"] == "gwa" and rb.summary["format"] == 2


def test_resume_with_more_planned_epochs_continues_on_the_new_plan():
    # A fit planned for 3 epochs, resumed (Lightning's ckpt_path, HF's resume) with max_epochs=10.
    rs = results(MEANS)
    first = EpochMonitor(patience=5)
    first.start(max_epochs=3, num_samples=N, write=False, framework="test")
    for r in rs[:3]:
        first.end_epoch(r)
    resumed = EpochMonitor(patience=5)
    resumed.load_state_dict(first.state_dict())
    resumed.start(max_epochs=10, num_samples=N, write=False, framework="test")
    for r in rs[3:]:
        resumed.end_epoch(r)
    assert [row["epoch"] for row in resumed.rows] == list(range(1, 11))
    assert resumed.best_epoch == gwa.select_epoch(resumed.rows, total_epochs=10)


def test_errors():
    with pytest.raises(ValueError, match=r"`criterion` to be one of \[.*'gwa'.*\]; got 'loss'"):
        EpochMonitor(monitor="loss")
    with pytest.raises(
        ValueError,
        match=r"`criterion` to be one of \['gwa_paper', 'gwa', 'align_mean'\] \(one value "
        r"per epoch\); got 'val'",
    ):
        EpochMonitor(monitor="val")
    with pytest.raises(ValueError, match=r"`patience` to be an integer >= 1 or None; got 0"):
        EpochMonitor(patience=0)
    with pytest.raises(RuntimeError, match="before start"):
        EpochMonitor().end_epoch(results([0.1])[0])
    with pytest.raises(ValueError, match="monitor='gwa'"):
        EpochMonitor().load_state_dict({"monitor": "align_mean", "rows": []})
    m = EpochMonitor(run_dir="never-created")
    with pytest.raises(ValueError, match="num_samples"):
        m.start(max_epochs=3, num_samples=None, write=True, framework="test")
