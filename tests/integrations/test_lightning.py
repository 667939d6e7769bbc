"""GWACallback against a plain loop scored by the numpy core; stop rule, best weights, resume, run dir, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch

pytest.importorskip("lightning")

import _lightning_setup as S
from lightning.pytorch.callbacks import ModelCheckpoint

import gwa
from gwa.integrations.lightning import GWACallback, default_batch_to_targets_ids
from gwa.rundir import load_run

torch.set_num_threads(1)
EPOCHS, BATCH = 5, 16


def fit(callback, epochs=EPOCHS, batch=BATCH, module=None, ckpt_path=None, **kwargs):
    module = module or S.Module()
    data = S.loader(batch, with_ids=kwargs.pop("with_ids", True))
    S.trainer(epochs, [callback, *kwargs.pop("callbacks", [])], **kwargs).fit(
        module, data, ckpt_path=ckpt_path
    )
    return module


def test_scores_and_gwa_match_the_numpy_core_on_pre_step_weights(tmp_path):
    cb = GWACallback(run_dir=tmp_path / "run", signals=("loss",))
    fit(cb)
    expected, _ = S.oracle(EPOCHS, BATCH)
    run = load_run(tmp_path / "run")
    assert run.complete and run.epochs == list(range(1, EPOCHS + 1))
    for epoch, scores in enumerate(expected, start=1):
        np.testing.assert_allclose(run.scores(epoch), scores, atol=2e-6)
        summary = gwa.summarize(scores)
        row = run.metrics[epoch - 1]
        assert row["gwa"] == pytest.approx(summary.gwa, rel=1e-4, abs=1e-6)
        assert row["gwa"] == pytest.approx(summary.mean / (summary.excess_kurtosis + 3), rel=1e-4, abs=1e-6)
        assert row["gwa_paper"] == pytest.approx(summary.gwa_paper, rel=1e-4, abs=1e-6)
        assert row["gwa_paper_flagged"] is summary.flagged
        assert row["align_mean"] == pytest.approx(summary.mean, abs=1e-6)
        assert row["n_scores"] == S.N and row["step"] == epoch * S.N // BATCH
        assert row["train_loss"] > 0
    assert run.signals() == ["alignment", "loss"]
    # The last epoch's values reached the trainer's metrics (loggers) under the documented names.
    last = gwa.summarize(expected[-1])
    logged = {k: float(v) for k, v in cb_metrics(cb).items()}
    assert set(logged) >= {
        "gwa",
        "gwa_paper",
        "gwa_paper_flagged",
        "align_mean",
        "align_std",
        "align_excess_kurtosis",
        "train_loss",
    }
    assert logged["gwa"] == pytest.approx(last.gwa, rel=1e-4, abs=1e-6)  # 5 epochs: no warm-up (floor 0.5)
    assert logged["gwa_paper"] == pytest.approx(last.gwa_paper, rel=1e-4, abs=1e-6)
    assert logged["align_mean"] == pytest.approx(last.mean, abs=1e-6)
    assert logged["align_std"] == pytest.approx(last.std, rel=1e-4)
    assert logged["align_excess_kurtosis"] == pytest.approx(last.excess_kurtosis, rel=1e-3, abs=1e-5)
    assert logged["gwa_paper_flagged"] == float(last.flagged)
    # The online best epoch is the default criterion's post-hoc choice; summary.json has the choices.
    assert (
        cb.best_epoch
        == gwa.select_epoch(run.metrics, total_epochs=EPOCHS)
        == run.summary["criteria"]["gwa"]["epoch"]
    )
    assert run.summary["best_epoch"] == cb.best_epoch and run.config["framework"] == "lightning"


def cb_metrics(cb):
    return cb._last_trainer_metrics


@pytest.fixture(autouse=True)
def _keep_metrics(monkeypatch):
    # Record the trainer's callback_metrics at the end of fit (the trainer object is local to fit()).
    original = GWACallback.on_train_end

    def on_train_end(self, trainer, pl_module):
        self._last_trainer_metrics = dict(trainer.callback_metrics)
        original(self, trainer, pl_module)

    monkeypatch.setattr(GWACallback, "on_train_end", on_train_end)


def test_stops_in_its_own_hook_and_restores_the_best_weights():
    cb = GWACallback(monitor="align_mean", patience=1, restore_best_weights=True)
    module = fit(cb, epochs=20, module=S.Module(lr=3.0))
    values = [s.mean for s in cb.tracker.history]
    # Replay on the logged values: the core's EarlyStopper for 20 planned epochs (warm-up 2) stops and picks alike.
    stopper = gwa.EarlyStopper("align_mean", patience=1, total_epochs=20)
    stop = next(i for i, v in enumerate(values, start=1) if stopper.step(v))
    assert len(values) == stop < 20 and cb.stopped_epoch == stop == stopper.stopped_epoch
    assert cb.best_epoch == stopper.best_epoch and cb.best_epoch > stopper.warmup == 2
    assert (
        cb.monitor.stopper.message == stopper.message and stopper.reason is gwa.StopReason.PATIENCE_EXHAUSTED
    )
    _, weights = S.oracle(len(values), BATCH, lr=3.0)
    for name, tensor in module.net.state_dict().items():
        torch.testing.assert_close(tensor, weights[cb.best_epoch - 1][name], rtol=1e-5, atol=1e-6)


def test_resumed_fit_gives_the_numbers_of_an_uninterrupted_one(tmp_path):
    full = GWACallback(patience=3, restore_best_weights=True, run_dir=tmp_path / "full")
    fit(full)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    first = GWACallback(patience=3, restore_best_weights=True, run_dir=tmp_path / "resumed")
    fit(first, epochs=2, callbacks=[ckpt], enable_checkpointing=True)
    resumed = GWACallback(patience=3, restore_best_weights=True, run_dir=tmp_path / "resumed")
    module = fit(resumed, ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert [s.gwa for s in resumed.tracker.history] == pytest.approx(
        [s.gwa for s in full.tracker.history], rel=1e-6
    )
    assert resumed.best_epoch == full.best_epoch and resumed.stopped_epoch == full.stopped_epoch
    a, b = load_run(tmp_path / "full"), load_run(tmp_path / "resumed")
    assert b.epochs == a.epochs
    np.testing.assert_allclose(b.score_matrix(), a.score_matrix(), atol=1e-6)
    for (
        name,
        value,
    ) in full.monitor.best_state.items():  # the best weights survived the checkpoint and are loaded
        torch.testing.assert_close(resumed.monitor.best_state[name], value)
        torch.testing.assert_close(module.state_dict()[name], value)


def test_clear_errors(tmp_path):
    # (x, y) batches with run_dir and a training_step returning the loss alone now work: test_dropin.py.
    with pytest.raises(ValueError, match=r"Expected `criterion` to be one of \[.*\]; got 'val_loss'"):
        GWACallback(monitor="val_loss")
    with pytest.raises(
        ValueError,
        match=r"`criterion` to be one of \['gwa_paper', 'gwa', 'align_mean'\] \(one value per "
        r"epoch\); got 'val'",
    ):
        GWACallback(monitor="val")
    with pytest.raises(TypeError, match="run_config"):
        GWACallback(run_config=[1])
    with pytest.raises(ValueError, match="patience"):
        GWACallback(patience=0)
    with pytest.raises(TypeError, match="batch_to_targets_ids"):
        GWACallback(batch_to_targets_ids=3)


def test_default_batch_parsing():
    y, ids = torch.tensor([1]), torch.tensor([7])
    assert default_batch_to_targets_ids((0, y)) == (y, None)
    assert default_batch_to_targets_ids([0, y, 0, ids]) == (y, ids)
    assert default_batch_to_targets_ids({"x": 0, "labels": y, "index": ids}) == (y, ids)
    with pytest.raises(ValueError, match="targets"):
        default_batch_to_targets_ids({"x": 0})
    with pytest.raises(ValueError, match="Expected the batch"):
        default_batch_to_targets_ids(torch.zeros(3))


@pytest.mark.slow  # two processes that import Lightning: ~15 s of CPU
def test_two_ddp_processes_give_the_numbers_of_one(tmp_path):
    script = Path(__file__).with_name("_lightning_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(script.parent)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run2")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    S.trainer(3, [GWACallback(run_dir=tmp_path / "run1", patience=5)], use_distributed_sampler=False).fit(
        S.ShardedModule()
    )
    one, two = load_run(tmp_path / "run1"), load_run(tmp_path / "run2")
    assert two.epochs == one.epochs == [1, 2, 3] and two.config["framework"] == "lightning"
    # Float64 model: the only difference is the order in which DDP sums the two ranks' gradients (the stored
    # scores are float32).
    np.testing.assert_allclose(two.score_matrix(), one.score_matrix(), rtol=0, atol=1e-7)
    assert not np.isnan(two.score_matrix()).any()
    for r1, r2 in zip(one.metrics, two.metrics):
        assert r2["n_scores"] == r1["n_scores"] == S.N and r2["n_duplicates"] == 0
        assert r2["gwa"] == pytest.approx(r1["gwa"], rel=1e-9)
        assert r2["align_excess_kurtosis"] == pytest.approx(r1["align_excess_kurtosis"], rel=1e-9)
        assert r2["gwa"] == pytest.approx(gwa.summarize(two.scores(r2["epoch"])).gwa, rel=1e-5)
