"""GWATrainerCallback with tiny random BERT/RoBERTa classifiers: scores vs the numpy core, stop, resume, run dir."""

from __future__ import annotations

import numpy as np
import pytest

import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip(
    "accelerate", reason="transformers.Trainer needs accelerate (the huggingface extra must list it)"
)

from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    RobertaConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import gwa
from gwa.integrations.huggingface import GWATrainerCallback
from gwa.rundir import load_run

torch.set_num_threads(1)
N, LENGTH, C, BATCH = 32, 6, 3, 8
SMALL = {
    "vocab_size": 100,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "num_labels": C,
    "max_position_embeddings": 16,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


class Tokens(torch.utils.data.Dataset):
    """Random token sequences whose label is the first token mod 3, with the dataset index as ``sample_id``."""

    def __init__(self, with_ids=True, padded=False):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 100, (N, LENGTH), generator=g)
        self.mask = torch.ones(N, LENGTH, dtype=torch.long)
        if padded:  # right padding with token 0 (the pad token): 0, 1 or 2 pads per sequence
            for i in range(N):
                if i % 3:
                    self.ids[i, -(i % 3) :], self.mask[i, -(i % 3) :] = 0, 0
        self.with_ids = with_ids

    def __len__(self):
        return N

    def __getitem__(self, i):
        item = {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": int(self.ids[i, 0]) % C}
        return {**item, "sample_id": i} if self.with_ids else item


def model(kind="bert"):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=100,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=16,
            num_labels=C,
            pad_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    else:
        config = BertConfig(**SMALL) if kind == "bert" else RobertaConfig(**SMALL, pad_token_id=1)
    return AutoModelForSequenceClassification.from_config(config)


def train(callback, out, *, kind="bert", epochs=3, extra=(), resume=None, net=None, with_ids=True, **kwargs):
    opts = {
        "output_dir": str(out),
        "per_device_train_batch_size": BATCH,
        "num_train_epochs": epochs,
        "learning_rate": 5e-3,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "remove_unused_columns": False,
        "seed": 0,
        "disable_tqdm": True,
        "logging_strategy": "epoch",
    }
    args = TrainingArguments(**{**opts, **kwargs})
    net = net or model(kind)
    dataset = Tokens(with_ids, padded=kind == "gpt2")
    trainer = Trainer(model=net, args=args, train_dataset=dataset, callbacks=[callback, *extra])
    trainer.train(resume_from_checkpoint=resume)
    return trainer


class Recorder(TrainerCallback):
    """An independent record of each training forward: head input, head weight, logits, labels, ids."""

    def __init__(self, net, head):
        self.forwards, self.epoch_states = [], []
        head.register_forward_hook(self._head)
        net.register_forward_pre_hook(self._inputs, with_kwargs=True)  # before the callback's: sees the ids
        net.register_forward_hook(self._output)

    def _inputs(self, module, args, kwargs):
        if module.training:
            self.forwards.append({"labels": kwargs["labels"].clone(), "ids": kwargs["sample_id"].clone()})

    def _head(self, module, inputs, output):
        if module.training:
            self.forwards[-1].update(
                x=inputs[0].detach().double().numpy(), w=module.weight.detach().double().numpy().copy()
            )

    def _output(self, module, inputs, output):
        if module.training:
            f = self.forwards[-1]
            f["logits"] = output.logits.detach().double().numpy()
            if f["x"].ndim == 3:  # per-token head (GPT-2): the token whose head output is the pooled logits
                per_token = f["x"] @ f["w"].T
                match = np.abs(per_token - f["logits"][:, None]).max(axis=2) < 1e-5
                assert match.any(axis=1).all()
                f["x"] = f["x"][np.arange(len(match)), match.argmax(axis=1)]

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.epoch_states.append({k: v.clone() for k, v in model.state_dict().items()})

    def epoch_scores(self, epochs):
        per_epoch = len(self.forwards) // epochs
        out = []
        for e in range(epochs):
            scores = np.full(N, np.nan)
            for f in self.forwards[e * per_epoch : (e + 1) * per_epoch]:
                scores[f["ids"].numpy()] = gwa.alignment(f["logits"], f["labels"].numpy(), f["x"], f["w"])
            out.append(scores)
        return out


@pytest.mark.slow  # a Hugging Face Trainer fit per model
@pytest.mark.parametrize(
    ("kind", "head"), [("bert", "classifier"), ("roberta", "classifier.out_proj"), ("gpt2", "score")]
)
def test_scores_match_the_numpy_core_and_the_run_dir_is_written(tmp_path, kind, head):
    net = model(kind)
    recorder = Recorder(net, net.get_submodule(head))
    cb = GWATrainerCallback(run_dir=tmp_path / "run")
    trainer = train(cb, tmp_path / "out", net=net, extra=[recorder], epochs=2)
    assert cb.head_name == head
    run = load_run(tmp_path / "run")
    assert run.complete and run.epochs == [1, 2] and run.config["framework"] == "huggingface"
    for epoch, expected in enumerate(recorder.epoch_scores(2), start=1):
        assert not np.isnan(expected).any()
        np.testing.assert_allclose(run.scores(epoch), expected, atol=1e-5)
        summary = gwa.summarize(expected)
        assert run.metrics[epoch - 1]["gwa"] == pytest.approx(summary.gwa, rel=1e-4, abs=1e-6)
        assert run.metrics[epoch - 1]["gwa_paper"] == pytest.approx(summary.gwa_paper, rel=1e-4, abs=1e-6)
        assert run.metrics[epoch - 1]["step"] == epoch * N // BATCH
    logged = [h for h in trainer.state.log_history if "gwa" in h]
    # 2 planned epochs: no warm-up (floor 0.2), so every logged `gwa` is the default value of its row.
    assert [h["gwa"] for h in logged] == pytest.approx([r["gwa"] for r in run.metrics])
    assert [h["gwa_paper"] for h in logged] == pytest.approx([r["gwa_paper"] for r in run.metrics])
    assert [h["gwa_paper_flagged"] for h in logged] == [float(r["gwa_paper_flagged"]) for r in run.metrics]
    assert {"align_mean", "align_std", "align_excess_kurtosis"} <= set(logged[0])
    assert cb.best_epoch == gwa.select_epoch(run.metrics, total_epochs=2) == run.summary["best_epoch"]
    assert run.summary["criteria"]["gwa"]["epoch"] == cb.best_epoch


@pytest.mark.slow  # a Hugging Face Trainer fit
def test_stops_itself_and_restores_the_best_weights(tmp_path):
    net = model()
    recorder = Recorder(net, net.classifier)
    cb = GWATrainerCallback(monitor="align_mean", patience=1, restore_best_weights=True)
    trainer = train(
        cb, tmp_path, net=net, extra=[recorder], epochs=12, learning_rate=5e-2, logging_strategy="no"
    )
    values = [s.mean for s in cb.tracker.history]
    assert [h["align_mean"] for h in trainer.state.log_history if "gwa" in h] == pytest.approx(values)
    stopper = gwa.EarlyStopper(
        "align_mean", patience=1, total_epochs=12
    )  # warm-up: the first 10% of 12 epochs
    assert stopper.warmup == 1
    stop = next(i for i, v in enumerate(values, start=1) if stopper.step(v))
    assert len(values) == stop < 12 and cb.stopped_epoch == stop == stopper.stopped_epoch == len(
        recorder.epoch_states
    )
    assert cb.best_epoch == stopper.best_epoch
    for name, value in recorder.epoch_states[cb.best_epoch - 1].items():
        torch.testing.assert_close(net.state_dict()[name], value)


@pytest.mark.slow  # two Hugging Face Trainer fits
def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    full = GWATrainerCallback(patience=2, restore_best_weights=True, run_dir=tmp_path / "run_full")
    train(full, tmp_path / "a", save_strategy="steps", save_steps=6)  # step 6 = mid epoch 2 (4 steps/epoch)
    resumed = GWATrainerCallback(
        patience=2, restore_best_weights=True, run_dir=tmp_path / "run_full", overwrite=True
    )
    resumed.load_checkpoint(tmp_path / "a" / "checkpoint-6")
    train(resumed, tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-6"))
    assert [s.gwa for s in resumed.tracker.history] == pytest.approx(
        [s.gwa for s in full.tracker.history], rel=1e-5
    )
    assert resumed.best_epoch == full.best_epoch
    assert [r["n_scores"] for r in resumed.rows] == [N] * 3
    for name, value in full.monitor.best_state.items():
        torch.testing.assert_close(resumed.monitor.best_state[name], value)


@pytest.mark.slow  # three short Hugging Face Trainer fits
def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="sample_id"):
        train(GWATrainerCallback(run_dir=tmp_path / "run"), tmp_path / "x", with_ids=False, epochs=1)
    train(GWATrainerCallback(), tmp_path / "a", epochs=1, save_strategy="steps", save_steps=2)
    (tmp_path / "a" / "checkpoint-2" / "gwa_callback_rank0.pt").unlink()
    with pytest.raises(FileNotFoundError, match="load_checkpoint"):
        train(GWATrainerCallback(), tmp_path / "a", epochs=1, resume=str(tmp_path / "a" / "checkpoint-2"))
    with pytest.raises(TypeError, match="id_key"):
        GWATrainerCallback(id_key=0)
    with pytest.raises(ValueError, match="patience"):
        GWATrainerCallback(patience=1.5)


@pytest.mark.slow
def test_tensorboard_sees_gwa_with_the_callback_last(tmp_path, monkeypatch):
    """The Trainer puts its reporting callbacks (report_to) before the user's; gwa's values reach TensorBoard
    anyway, once per epoch, with the callback last in the list."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cb = GWATrainerCallback()
    trainer = train(cb, tmp_path / "out", report_to=["tensorboard"])
    names = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert names.index("TensorBoardCallback") < names.index("GWATrainerCallback")  # TensorBoard first
    (run_dir,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = [gwa.policy.monitor_value(r["gwa"], epoch=r["epoch"], total_epochs=3) for r in cb.rows]
    assert [e.step for e in events.Scalars("train/gwa")] == [r["step"] for r in cb.rows]  # once per epoch
    np.testing.assert_allclose([e.value for e in events.Scalars("train/gwa")], logged, rtol=1e-6)
    np.testing.assert_allclose(
        [e.value for e in events.Scalars("train/gwa_paper")], [r["gwa_paper"] for r in cb.rows], rtol=1e-6
    )


def test_reporters_before_the_callback_get_its_values(tmp_path):
    """The hand-off to the reporting callbacks that saw an ``on_log`` before gwa's (the Trainer's order) finds
    them through transformers' own ``CallbackHandler``: this fails if transformers changes how it dispatches."""
    from transformers.integrations import TensorBoardCallback, WandbCallback
    from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState

    class Reporter:  # a reporting callback, without its logging library
        def __init__(self):
            self.logged: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logged.append(dict(logs))

    class Before(Reporter, TensorBoardCallback):
        pass

    class After(Reporter, WandbCallback):
        pass

    cb = GWATrainerCallback()
    before, after = Before(), After()
    handler = CallbackHandler([before, cb, after], None, None, None, None)
    state = TrainerState(global_step=4)
    state.log_history.append({"loss": 1.0, "step": 4})  # what Trainer.log appends before on_log
    values = {"gwa": 0.25, "gwa_paper": 0.5}
    cb._to_log = dict(values)  # what on_epoch_end hands to the next on_log
    handler.on_log(TrainingArguments(output_dir=str(tmp_path)), state, TrainerControl(), {"loss": 1.0})
    assert before.logged == [{"loss": 1.0}, values]  # the Trainer's log, then gwa's values, once
    assert after.logged == [{"loss": 1.0, **values}]  # after gwa's: in the same log
    assert state.log_history == [{"loss": 1.0, "step": 4, **values}]
    cb._to_log = None  # no values pending: nothing more to anyone
    handler.on_log(TrainingArguments(output_dir=str(tmp_path)), state, TrainerControl(), {"loss": 0.5})
    assert before.logged[-1] == {"loss": 0.5} and len(before.logged) == 3


def test_a_tracker_state_before_training_is_refused_with_what_is_missing():
    cb = GWATrainerCallback()  # on_train_begin has not built the tracker yet
    with pytest.raises(ValueError, match=r"tracker to be built .* got tracker=None"):
        cb.load_state_dict({"monitor": {"monitor": "gwa"}, "tracker": {"format": 2}})
    cb.load_state_dict({"monitor": {"monitor": "gwa"}, "tracker": None})  # no tracker state: nothing to load
    assert cb.tracker is None


def test_veto_callable_is_called_each_epoch_and_keeps_the_candidates_epoch(tmp_path):
    from gwa import policy

    split = [0.2, 0.9, 0.4, 0.5]
    calls = []

    def split_accuracy(net):
        assert not net.training and not torch.is_grad_enabled()  # eval mode, no gradients
        calls.append(len(calls) + 1)
        return split[len(calls) - 1]

    cb = GWATrainerCallback(veto=split_accuracy)
    train(cb, tmp_path, epochs=len(split))
    assert calls == [1, 2, 3, 4] and [r["veto_acc"] for r in cb.monitor.rows] == split
    evidence = cb.monitor.classes.evidence
    rows = [{**r, "class_evidence": e} for r, e in zip(cb.monitor.rows, evidence, strict=True)]
    assert cb.best_epoch == policy.choose_with_veto(rows, total_epochs=len(split))[0]
