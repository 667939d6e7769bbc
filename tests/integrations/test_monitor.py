"""EpochMonitor: best epoch = the criteria module's choice, stop rule vs EarlyStopper, resume, run dir, errors."""

from __future__ import annotations

import numpy as np
import pytest

import gwa
from gwa.experiments import criteria
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
        padded = m.rows + [{"epoch": e} for e in range(k + 1, len(MEANS) + 1)]
        assert m.best_epoch == criteria.select_all(padded).get(monitor)  # None during the warm-up
    assert m.best_epoch == criteria.select_all(m.rows)[monitor] and m.stopped_epoch is None


def test_stop_rule_matches_early_stopper_with_the_paper_warm_up():
    m = EpochMonitor(monitor="align_mean", patience=2)
    m.start(max_epochs=len(MEANS), num_samples=N, write=False, framework="test")
    stopper = gwa.EarlyStopper("max", patience=2, warmup=1)  # floor(0.1 * 10)
    for result in results(MEANS):
        row, stop = m.end_epoch(result)
        assert stop == stopper.step(row["align_mean"])
        assert m.best_epoch == (None if stopper.best_epoch is None else stopper.best_epoch + 1)
        if stop:
            break
    assert m.stopped_epoch == stopper.stopped_epoch + 1 < len(MEANS)


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
        assert {k: v for k, v in a[0].items() if k != "wall_time"} == {k: v for k, v in b[0].items()
                                                                       if k != "wall_time"}
        assert a[1] == b[1]
    full.finish()
    resumed.finish()
    ra, rb = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert ra.epochs == rb.epochs == list(range(1, 11))
    np.testing.assert_array_equal(ra.score_matrix(), rb.score_matrix())
    assert ra.summary["criteria"] == rb.summary["criteria"] and rb.summary["best_epoch"] == full.best_epoch


def test_errors():
    with pytest.raises(ValueError, match="monitor"):
        EpochMonitor(monitor="loss")
    with pytest.raises(ValueError, match="patience"):
        EpochMonitor(patience=0)
    with pytest.raises(RuntimeError, match="before start"):
        EpochMonitor().end_epoch(results([0.1])[0])
    with pytest.raises(ValueError, match="monitor='gwa'"):
        EpochMonitor().load_state_dict({"monitor": "align_mean", "rows": []})
    m = EpochMonitor(run_dir="never-created")
    with pytest.raises(ValueError, match="num_samples"):
        m.start(max_epochs=3, num_samples=None, write=True, framework="test")
