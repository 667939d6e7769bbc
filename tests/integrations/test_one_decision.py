"""One decision, one epoch: the same synthetic history through every surface that chooses an epoch.

The history (20 planned epochs, so a warm-up of 2) is built from synthetic alignment scores so that every trap
is present:

- the highest default value (``gwa``) of the whole run lies in the warm-up (epoch 1), which is never chosen;
- the paper's value (``gwa_paper``) has a pole epoch (4: near-uniform scores, excess kurtosis about -1.15,
  denominator about 0.045) where it is highest after the warm-up; the default value does not choose it;
- the default's best epoch after the warm-up is :data:`BEST` = 6, three epochs later (patience 3 > warm-up 2)
  every stop rule stops at :data:`STOP` = 9.

The history flows through (a) the core post-hoc :func:`gwa.select_epoch`, (b) the online :class:`gwa.EarlyStopper`,
(c) ``gwa train`` (its summary.json, ``checkpoints/best_gwa.json`` and the ``--early-stop`` epoch), (d) Lightning's
own ``ModelCheckpoint(monitor="gwa", mode="max")`` and ``EarlyStopping(monitor="gwa", mode="max",
check_finite=False, patience=3)`` beside :class:`GWACallback`, and (e) the Hugging Face :class:`GWATrainerCallback`.
For (c)-(e) the real trainers run on tiny models; the tracker's epoch summaries are replaced by the synthetic ones
(``GWATracker.end_epoch`` patched), so every surface decides on exactly this history.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gwa
from gwa import policy
from gwa.torch import GWATracker

TOTAL, PATIENCE = 20, 3
WARMUP, POLE, BEST, STOP = 2, 4, 6, 9
N_SCORES = 400


def _near_uniform(mean: float) -> np.ndarray:
    """Scores whose excess kurtosis is -1.155: the paper's denominator is 0.045, its value mean / 0.045."""
    return np.r_[np.linspace(mean - 0.5, mean + 0.5, N_SCORES - 1), mean]


def _normal(mean: float, rng) -> np.ndarray:
    return np.clip(rng.normal(mean, 0.1, N_SCORES), -1, 1)


def synthetic_history() -> list[gwa.EpochSummary]:
    rng = np.random.default_rng(9)
    means = {1: 0.8, 2: 0.2, 3: 0.25, 5: 0.35, 6: 0.45, 7: 0.40, 8: 0.38, 9: 0.30}
    history = []
    for epoch in range(1, TOTAL + 1):
        if epoch == POLE:
            scores = _near_uniform(0.05)
        else:
            scores = _normal(means.get(epoch, 0.30 - 0.01 * (epoch - 9)), rng)
        history.append(gwa.summarize(scores))
    return history


HISTORY = synthetic_history()


def test_the_history_sets_every_trap():
    values = np.array([s.gwa for s in HISTORY])
    paper = np.array([s.gwa_paper for s in HISTORY])
    assert gwa.policy.warmup_epochs(TOTAL) == WARMUP
    assert 1 + int(np.argmax(values)) == 1 <= WARMUP  # the highest default value lies in the warm-up
    assert 1 + WARMUP + int(np.argmax(values[WARMUP:])) == BEST
    # The paper's value: a guarded pole at epoch 4, its highest value after the warm-up, 5x the default's best.
    assert HISTORY[POLE - 1].guard.code is gwa.GuardCode.KURTOSIS_POLE
    assert 0 < HISTORY[POLE - 1].denominator < 0.1
    assert 1 + WARMUP + int(np.argmax(paper[WARMUP:])) == POLE and paper[POLE - 1] > 5 * paper[BEST - 1]
    assert values[POLE - 1] < values[BEST - 1]  # the default value has no pole there
    assert all(s.guard is None for i, s in enumerate(HISTORY, start=1) if i != POLE)
    # Patience 3 after epoch 6: epochs 7-9 are all lower, so a stop rule stops at 9.
    assert values[BEST - 1] > values[BEST:STOP].max() and values[BEST - 1] > values[STOP:].max()
    assert PATIENCE > WARMUP


# ---------------------------------------------------------------------------------------------- (a), (b) core


def test_a_core_post_hoc_choice():
    assert gwa.select_epoch(HISTORY, total_epochs=TOTAL) == BEST
    assert gwa.select_epoch(HISTORY[:STOP], total_epochs=TOTAL) == BEST  # the run as far as it went
    assert gwa.select_epoch([s.gwa for s in HISTORY], total_epochs=TOTAL) == BEST  # the same rule on numbers
    assert (
        gwa.select_epoch(HISTORY, "gwa_paper", total_epochs=TOTAL) == POLE
    )  # the paper's rule takes the pole
    # Without the planned epochs, a run stopped at 9 has the warm-up of 9 epochs (none), and epoch 1 would win.
    assert gwa.select_epoch(HISTORY[:STOP]) == 1
    assert policy.select_all(HISTORY, total_epochs=TOTAL)["gwa"] == BEST


def test_b_online_early_stopper():
    stopper = gwa.EarlyStopper(patience=PATIENCE, total_epochs=TOTAL)
    stops = [stopper.step(s) for s in HISTORY[:STOP]]
    assert stops == [False] * (STOP - 1) + [True]
    assert (stopper.best_epoch, stopper.stopped_epoch) == (BEST, STOP)
    assert stopper.reason is gwa.StopReason.PATIENCE_EXHAUSTED
    assert stopper.message.startswith(
        f"stop at epoch {STOP}: no new best for {PATIENCE} epochs since epoch {BEST}"
    )
    # Without patience the online best epoch at the end of the whole history is the post-hoc choice.
    tracking = gwa.EarlyStopper(total_epochs=TOTAL)
    for epoch, s in enumerate(HISTORY, start=1):
        tracking.step(s)
        if epoch > WARMUP:
            assert tracking.best_epoch == gwa.select_epoch(HISTORY[:epoch], total_epochs=TOTAL)
    assert tracking.best_epoch == BEST and tracking.stopped_epoch is None


# ---------------------------------------------------------------------------------------------- the trainers


@pytest.fixture
def synthetic_tracker(monkeypatch):
    """Make every GWATracker return the synthetic summary of its epoch (scores and counts stay the real ones)."""
    original = GWATracker.end_epoch
    served = []

    def end_epoch(self):
        result = original(self)
        served.append(result.epoch)
        return dataclasses.replace(result, summary=HISTORY[result.epoch - 1])

    monkeypatch.setattr(GWATracker, "end_epoch", end_epoch)
    return served


def _logged_gwa_expected():
    return [math.nan if e <= WARMUP else HISTORY[e - 1].gwa for e in range(1, STOP + 1)]


def _check_diagnostics(callback, caught, summary=None):
    """The callback's diagnostics are gwa.policy.diagnose's on its rows (with the last epoch's alignment and every
    epoch's class evidence), each warned once at the end of training and, with a run directory, written to
    summary.json."""
    last = callback.last_result.scores
    alignment = None if last is None else np.asarray(last, np.float64)[None]
    evidence = callback.monitor.classes.evidence
    assert evidence is not None and len(evidence) == len(callback.rows)
    expected = policy.diagnose(
        callback.rows, "gwa", alignment=alignment, total_epochs=TOTAL, evidence=evidence
    )
    assert callback.diagnostics == expected and expected  # a tiny run: its warm-up is too short
    warned = [str(w.message) for w in caught if str(w.message).startswith("gwa: [")]
    assert warned == [f"gwa: {d}" for d in expected]
    assert all(w.category is RuntimeWarning for w in caught if str(w.message).startswith("gwa: ["))
    if summary is not None:
        assert summary["diagnostics"] == json.loads(json.dumps([dataclasses.asdict(d) for d in expected]))


# ---------------------------------------------------------------------------------------------- (c) gwa train

TINY = {
    "dataset": "digits",
    "num_train": 200,
    "model": "mlp",
    "hidden": (16,),
    "batch_size": 100,
    "quiet": True,
    "signals": (),
}


def test_c_gwa_train_on_the_synthetic_history(tmp_path, synthetic_tracker):
    from gwa.rundir import load_run
    from gwa.runner.config import RunConfig
    from gwa.runner.train import run_training

    config = RunConfig(**TINY, epochs=TOTAL, early_stop=PATIENCE, out=str(tmp_path / "run"))
    run = load_run(run_training(config, progress=False))
    assert synthetic_tracker == list(range(1, STOP + 1))
    assert run.epochs == list(range(1, STOP + 1)) and run.summary["epochs_run"] == STOP
    assert [r["gwa"] for r in run.metrics] == pytest.approx([s.gwa for s in HISTORY[:STOP]], rel=1e-12)
    assert run.summary["criteria"]["gwa"]["epoch"] == BEST
    assert run.summary["criteria"]["gwa_paper"]["epoch"] == POLE
    best = json.loads((tmp_path / "run" / "checkpoints" / "best_gwa.json").read_text())
    assert best["epoch"] == BEST == run.summary["best_checkpoint"]["epoch"]
    assert (tmp_path / "run" / "checkpoints" / best["file"]).exists()


def test_c_gwa_train_real_run_agrees_with_the_core(tmp_path, caplog):
    """A real run through the command line: its summary and best checkpoint are the core's choice over its own
    metric rows, and its --early-stop epoch is the online stopper replayed on them."""
    import logging

    from gwa import cli
    from gwa.rundir import load_run

    caplog.set_level(logging.INFO, logger="gwa.runner.loop")
    epochs, patience = 10, 2
    out = tmp_path / "real"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--num-train",
        "300",
        "--hidden",
        "16",
        "--epochs",
        str(epochs),
        "--lr",
        "0.03",
        "--noise",
        "symmetric",
        "--noise-rate",
        "0.4",
        "--early-stop",
        str(patience),
        "--out",
        str(out),
        "-q",
    ]
    assert cli.main(argv) == 0
    run = load_run(out)
    rows = run.metrics
    chosen = gwa.select_epoch(rows, total_epochs=run.config["epochs"])
    assert run.summary["criteria"]["gwa"]["epoch"] == chosen
    assert json.loads((out / "checkpoints" / "best_gwa.json").read_text())["epoch"] == chosen
    replay = gwa.EarlyStopper(patience=patience, total_epochs=epochs)
    stops = [replay.step(r) for r in rows]
    assert stops == [False] * (len(rows) - 1) + [
        True
    ]  # this seed stops early: the replay stops at the same epoch
    assert replay.stopped_epoch == len(rows) == run.summary["epochs_run"] < epochs
    assert replay.best_epoch == chosen
    # The command's message is the stopper's, in 1-based epochs.
    assert f"early stop: {replay.message}" in caplog.text
    assert replay.message == (
        f"stop at epoch {len(rows)}: no new best for {patience} epochs since epoch {chosen} "
        f"(gwa {rows[chosen - 1]['gwa']:.6g})"
    )


# ---------------------------------------------------------------------------------------------- (d) Lightning


@pytest.mark.parametrize("gwa_first", [True, False], ids=["GWACallback first", "EarlyStopping first"])
def test_d_lightning_callbacks_and_lightnings_own_monitors(tmp_path, synthetic_tracker, gwa_first):
    pytest.importorskip("lightning")
    import _lightning_setup as S
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from gwa.integrations.lightning import GWACallback
    from gwa.rundir import load_run

    torch.set_num_threads(1)
    gwa_cb = GWACallback(patience=PATIENCE, run_dir=tmp_path / "run")
    early = EarlyStopping(monitor="gwa", mode="max", check_finite=False, patience=PATIENCE)
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="gwa", mode="max", save_top_k=1, filename="{epoch}"
    )
    logged = []

    class Record(S.L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            logged.append(float(trainer.callback_metrics["gwa"]))

    callbacks = [gwa_cb, early, Record(), ckpt] if gwa_first else [early, ckpt, gwa_cb, Record()]
    trainer = S.trainer(TOTAL, callbacks, enable_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(S.Module(), S.loader(16))
    assert synthetic_tracker == list(range(1, STOP + 1))
    np.testing.assert_allclose(logged, _logged_gwa_expected(), rtol=1e-6)  # NaN in the warm-up
    # Lightning's ModelCheckpoint keeps epoch BEST (its file name has the 0-based epoch) with BEST's value.
    match = re.fullmatch(r"epoch=(\d+)\.ckpt", ckpt.best_model_path.rsplit("/", 1)[-1])
    assert match and int(match.group(1)) + 1 == BEST
    assert float(ckpt.best_model_score) == pytest.approx(HISTORY[BEST - 1].gwa, rel=1e-6)
    # Lightning's EarlyStopping stops at STOP (0-based stopped_epoch), as GWACallback does.
    assert early.stopped_epoch + 1 == STOP == gwa_cb.stopped_epoch
    assert trainer.current_epoch == STOP
    assert gwa_cb.best_epoch == BEST
    run = load_run(tmp_path / "run")
    assert run.summary["best_epoch"] == run.summary["criteria"]["gwa"]["epoch"] == BEST
    assert run.summary["stopped_epoch"] == STOP
    _check_diagnostics(gwa_cb, caught, summary=run.summary)


@pytest.mark.parametrize("max_epochs", [10, 20])
def test_d_lightning_refuses_early_stopping_that_would_stop_in_the_warm_up(max_epochs):
    pytest.importorskip("lightning")
    import _lightning_setup as S
    from lightning.pytorch.callbacks import EarlyStopping

    from gwa.integrations.lightning import GWACallback

    warmup = policy.warmup_epochs(max_epochs)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"EarlyStopping(monitor='gwa') needs check_finite=False: gwa is NaN in the warm-up (epochs 1-{warmup} "
            f"of {max_epochs}), which gwa never chooses."
        ),
    ):
        S.trainer(max_epochs, [GWACallback(), EarlyStopping(monitor="gwa", mode="max")]).fit(
            S.Module(), S.loader(16)
        )
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"EarlyStopping(monitor='gwa') needs patience > {warmup}, the warm-up epochs of max_epochs={max_epochs}; "
            f"got patience={warmup}."
        ),
    ):
        S.trainer(
            max_epochs,
            [GWACallback(), EarlyStopping(monitor="gwa", mode="max", check_finite=False, patience=warmup)],
        ).fit(S.Module(), S.loader(16))


def test_d_lightning_allows_early_stopping_on_a_run_without_warm_up():
    pytest.importorskip("lightning")
    import _lightning_setup as S
    from lightning.pytorch.callbacks import EarlyStopping

    from gwa.integrations.lightning import GWACallback

    cb = GWACallback()
    S.trainer(5, [cb, EarlyStopping(monitor="gwa", mode="max", patience=1)]).fit(S.Module(), S.loader(16))
    assert len(cb.rows) >= 2  # 5 epochs: warm-up 0, the default check_finite=True never sees a NaN


# ---------------------------------------------------------------------------------------------- (e) Hugging Face


def _hf_train(tmp_path, callback, **kwargs):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from test_huggingface import Tokens, model
    from transformers import Trainer, TrainingArguments

    opts = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "num_train_epochs": TOTAL,
        "learning_rate": 5e-3,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "remove_unused_columns": False,
        "seed": 0,
        "disable_tqdm": True,
        "logging_strategy": "epoch",
    }
    trainer = Trainer(
        model=model(),
        args=TrainingArguments(**{**opts, **kwargs}),
        train_dataset=Tokens(),
        eval_dataset=Tokens() if kwargs.get("eval_strategy") else None,
        callbacks=[callback],
    )
    trainer.train()
    return trainer


def test_e_hugging_face_callback(tmp_path, synthetic_tracker):
    pytest.importorskip("transformers")
    from gwa.integrations.huggingface import GWATrainerCallback

    torch.set_num_threads(1)
    cb = GWATrainerCallback(patience=PATIENCE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _hf_train(tmp_path, cb)
    _check_diagnostics(cb, caught)
    assert synthetic_tracker == list(range(1, STOP + 1))
    assert cb.best_epoch == BEST and cb.stopped_epoch == STOP
    logged = [h["gwa"] for h in trainer.state.log_history if "gwa" in h]
    np.testing.assert_allclose(logged, _logged_gwa_expected(), rtol=1e-12)
    assert 1 + int(np.nanargmax(logged)) == BEST  # the highest logged value is the callback's choice


@pytest.mark.slow  # a Hugging Face Trainer fit
def test_e_hugging_face_metric_for_best_model_gwa(tmp_path, synthetic_tracker):
    """``metric_for_best_model="gwa"`` (documented to keep gwa's own choice) keeps the callback's best epoch."""
    pytest.importorskip("transformers")
    from gwa.integrations.huggingface import GWATrainerCallback

    torch.set_num_threads(1)
    cb = GWATrainerCallback(patience=PATIENCE)
    trainer = _hf_train(
        tmp_path,
        cb,
        eval_strategy="epoch",
        save_strategy="epoch",
        metric_for_best_model="gwa",
        greater_is_better=True,
        load_best_model_at_end=True,
        save_total_limit=1,
    )
    steps_per_epoch = 32 // 8
    assert cb.best_epoch == BEST
    assert trainer.state.best_global_step == BEST * steps_per_epoch
    assert trainer.state.best_metric == pytest.approx(HISTORY[BEST - 1].gwa)
