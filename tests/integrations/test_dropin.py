"""The drop-in paths: Lightning with ``return loss`` and ``(x, y)`` batches (one process and DDP), Hugging Face
keeping the best model without an eval set, ``RunRecorder`` in a plain loop, ``WithIndex``; and the run directory
each writes, read back by ``gwa report`` and ``gwa flag``."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import gwa
import torch
from gwa.integrations import RECOMMENDED_SIGNALS, RunRecorder, WithIndex
from gwa.rundir import load_run
from gwa.torch import GWATracker

torch.set_num_threads(1)
EPOCHS, BATCH = 5, 16


# ------------------------------------------------------------------------------------------------ WithIndex
def test_with_index_appends_the_index_to_every_item_kind():
    class Items:
        targets = (7, 8)

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return 10 * i, i

    wrapped = WithIndex(Items())
    assert len(wrapped) == 2 and wrapped[1] == (10, 1, 1) and wrapped.targets == (7, 8)
    assert WithIndex([{"x": 3}])[0] == {"x": 3, "sample_id": 0}
    assert WithIndex([{"x": 3}], key="idx")[0] == {"x": 3, "idx": 0}
    assert WithIndex([[5, 6]])[0] == [5, 6, 0]
    assert WithIndex(["a", "b"])[1] == ("b", 1)
    batch = next(iter(DataLoader(WithIndex(TensorDataset(torch.zeros(4, 2), torch.ones(4))), batch_size=4)))
    assert len(batch) == 3 and batch[2].tolist() == [0, 1, 2, 3]

    class IterableDataset:
        def __iter__(self):
            return iter(())

    with pytest.raises(TypeError, match="map-style dataset.*got IterableDataset"):
        WithIndex(IterableDataset())


# ------------------------------------------------------------------------------------------------ Lightning
def _lightning():
    pytest.importorskip("lightning")
    sys.path.insert(0, str(Path(__file__).parent))
    import _lightning_setup as S

    return S


def _loss_only_module(S, smoothing: float = 0.0, return_targets: bool = False):
    class LossOnly(S.Module):
        def __init__(self):
            super().__init__()
            self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)

        def training_step(self, batch, batch_idx):
            x, y = batch[0], batch[1]
            loss = self.criterion(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            if return_targets:
                soft = (1 - smoothing) * F.one_hot(y, S.C).float() + smoothing / S.C
                return {"loss": loss, "targets": soft}
            return loss

    return LossOnly()


def _xy_loader(S, with_index: bool):
    x, y = S.data()
    dataset = TensorDataset(x, y)
    return DataLoader(WithIndex(dataset) if with_index else dataset, batch_size=BATCH, shuffle=False)


def test_lightning_scores_a_plain_loss_step_like_the_numpy_core(tmp_path):
    S = _lightning()
    from gwa.integrations.lightning import GWACallback

    cb = GWACallback(run_dir=tmp_path / "run")
    S.trainer(EPOCHS, [cb]).fit(_loss_only_module(S), _xy_loader(S, with_index=True))
    expected, _ = S.oracle(EPOCHS, BATCH)
    run = load_run(tmp_path / "run")
    assert run.complete and run.epochs == list(range(1, EPOCHS + 1))
    for epoch, scores in enumerate(expected, start=1):
        np.testing.assert_allclose(run.scores(epoch), scores, atol=2e-6)
        assert run.metrics[epoch - 1]["gwa"] == pytest.approx(gwa.summarize(scores).gwa, rel=1e-4, abs=1e-6)
    x, y = S.data()
    np.testing.assert_array_equal(run.labels, y.numpy())  # collected from the batches, labels= not given
    assert run.signals() == ["alignment", *sorted(RECOMMENDED_SIGNALS)]
    # Training accuracy from the stored predictions, at each sample's forward pass.
    last_pred = run.scores(EPOCHS, "pred")
    assert run.metrics[-1]["train_acc"] == pytest.approx(float((last_pred == y.numpy()).mean()))
    # The inputs are (N, 8) float features: all kept as previews (1-D signals in the report).
    np.testing.assert_array_equal(run.preview_ids, np.arange(S.N))
    np.testing.assert_allclose(run.previews, x.numpy())
    assert (
        run.config["model"] == "LossOnly"
        and run.config["head"] == "net.2"
        and run.config["optimizer"] == "SGD"
    )


def test_lightning_without_ids_keeps_gwa_and_the_decision_but_stores_no_per_sample_scores(tmp_path):
    S = _lightning()
    from gwa.integrations.lightning import GWACallback

    with_ids = GWACallback(patience=2)
    S.trainer(EPOCHS, [with_ids]).fit(_loss_only_module(S), _xy_loader(S, with_index=True))
    without = GWACallback(patience=2, run_dir=tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        S.trainer(EPOCHS, [without]).fit(_loss_only_module(S), _xy_loader(S, with_index=False))
    # Besides the trust diagnostics at the end of training (tests/runner/test_diagnostics_surfaces.py), one warning.
    messages = [
        str(w.message)
        for w in caught
        if "gwa" in str(w.message).lower() and not str(w.message).startswith("gwa: [")
    ]
    assert len(messages) == 1 and "no sample ids" in messages[0] and "WithIndex" in messages[0]
    expected, _ = S.oracle(EPOCHS, BATCH)
    for a, b, scores in zip(with_ids.rows, without.rows, expected):
        assert (
            b["gwa"]
            == pytest.approx(a["gwa"], rel=1e-6)
            == pytest.approx(gwa.summarize(scores).gwa, rel=1e-4)
        )
    assert without.best_epoch == with_ids.best_epoch
    run = load_run(tmp_path / "run")
    assert run.epochs == list(range(1, EPOCHS + 1)) and run.signals() == [] and run.labels is None
    assert run.metrics[-1]["train_acc"] is not None  # from the signals, which need no ids


def test_lightning_logs_gwa_for_modelcheckpoint_through_its_logger(tmp_path):
    S = _lightning()
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from gwa.integrations.lightning import GWACallback

    cb = GWACallback()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="gwa", mode="max")
    S.trainer(10, [cb, ckpt], logger=CSVLogger(tmp_path / "logs"), enable_checkpointing=True).fit(
        _loss_only_module(S), _xy_loader(S, with_index=False)
    )
    assert int(re.search(r"epoch=(\d+)", ckpt.best_model_path).group(1)) + 1 == cb.best_epoch
    metrics = next((tmp_path / "logs").rglob("metrics.csv"))
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("gwa_paper")]
    assert len(rows) == 10 and rows[0]["gwa"] in ("", "nan")  # NaN in the warm-up: never chosen
    assert float(rows[-1]["gwa"]) == pytest.approx(cb.rows[-1]["gwa"], rel=1e-5)


def test_lightning_scores_class_ids_under_label_smoothing_and_warns_about_smoothed_targets():
    """Class ids are what to score under label smoothing (docs/soft-targets.md); smoothed rows get a warning."""
    S = _lightning()
    from gwa.integrations.lightning import GWACallback

    def fit(**kwargs):
        cb = GWACallback()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            S.trainer(1, [cb]).fit(_loss_only_module(S, **kwargs), _xy_loader(S, with_index=True))
        return cb.tracker.label_smoothing, [
            str(w.message) for w in caught if "label_smoothing" in str(w.message)
        ]

    assert fit(smoothing=0.1) == (0.1, [])
    smoothing, warned = fit(smoothing=0.1, return_targets=True)
    assert (
        smoothing == 0.1
        and len(warned) == 1
        and "label_smoothing=0.1" in warned[0]
        and "look smoothed" in warned[0]
    )
    assert fit(smoothing=0.0) == (0.0, [])


@pytest.mark.slow  # two Lightning DDP processes
def test_lightning_ddp_with_a_plain_loss_and_xy_batches_gives_the_numbers_of_one_process(tmp_path):
    S = _lightning()
    script = Path(__file__).with_name("_dropin_ddp_script.py")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(script.parent), *sys.path]),
    }
    for devices in (2, 1):
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / f"run{devices}"), str(devices)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_run(tmp_path / "run1"), load_run(tmp_path / "run2")
    assert one.epochs == two.epochs == [1, 2, 3] and two.config["world_size"] == 2
    for r1, r2 in zip(one.metrics, two.metrics):
        assert r2["n_scores"] == r1["n_scores"] == S.N
        assert r2["gwa"] == pytest.approx(r1["gwa"], rel=1e-6)
        assert r2["align_mean"] == pytest.approx(r1["align_mean"], abs=1e-9)
    assert two.summary["best_epoch"] == one.summary["best_epoch"]


# ----------------------------------------------------------------------------------------------- plain loop
def _images(n=96, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[:, 0, :, :2] += y[:, None, None].float()  # the class shows in the left columns
    return x, y


def _image_net(c=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, c)
    )


def plain_loop_run(path, *, epochs=6, patience=None, noise_mask=None, flip=()):
    """A plain loop through RunRecorder on 8x8 images (labels in ``flip`` changed); returns (recorder, tracker, y)."""
    x, y = _images()
    y = y.clone()
    for i in flip:
        y[i] = (y[i] + 1) % 4
    model = _image_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    loader = DataLoader(
        WithIndex(TensorDataset(x, y)),
        batch_size=16,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    tracker = GWATracker(model, num_samples=len(x), signals=RECOMMENDED_SIGNALS)
    with RunRecorder(
        path,
        tracker,
        total_epochs=epochs,
        patience=patience,
        noise_mask=noise_mask,
        config={"dataset": "8x8 images", "model": "mlp", "lr": 0.3},
    ) as recorder:
        for _ in range(epochs):
            for xb, yb, ids in loader:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                recorder.update(logits, yb, ids, inputs=xb)
            if recorder.end_epoch(tracker.end_epoch()):
                break
    return recorder, tracker, y


def test_run_recorder_writes_a_complete_run_and_decides_like_the_core(tmp_path):
    recorder, tracker, y = plain_loop_run(tmp_path / "run", epochs=8, patience=2)
    run = load_run(tmp_path / "run")
    stopper = gwa.EarlyStopper(patience=2, total_epochs=8)
    stops = [stopper.step(s) for s in tracker.history]
    assert stops[-1] == (len(tracker.history) < 8) and not any(stops[:-1])
    assert recorder.best_epoch == stopper.best_epoch == run.summary["best_epoch"]
    assert recorder.message == stopper.message
    assert run.complete and run.config["framework"] == "loop" and run.epochs == list(range(1, len(stops) + 1))
    np.testing.assert_array_equal(run.labels, y.numpy())
    assert run.previews.shape == (96, 1, 8, 8) and run.preview_ids.tolist() == list(range(96))
    pred = run.scores(run.epochs[-1], "pred")
    assert run.metrics[-1]["train_acc"] == pytest.approx(float((pred == y.numpy()).mean()))


def test_run_recorder_refuses_what_cannot_make_a_run_directory(tmp_path):
    model = _image_net()
    with pytest.raises(TypeError, match="num_samples=.*got GWATracker with num_samples=None"):
        RunRecorder(tmp_path / "a", GWATracker(model))
    tracker = GWATracker(model, num_samples=4)
    recorder = RunRecorder(tmp_path / "b", tracker)
    with pytest.raises(ValueError, match="Expected `sample_ids`.*WithIndex"):
        recorder.update(model(torch.zeros(4, 1, 8, 8)), torch.zeros(4, dtype=torch.long), None)
    tracker.remove()


def test_run_recorder_previews_only_the_most_negative_samples_when_inputs_are_large(tmp_path, monkeypatch):
    from gwa.integrations import _collect

    monkeypatch.setattr(_collect, "PREVIEW_BUDGET_BYTES", 40 * 256)  # 40 previews of 8x8 float32
    plain_loop_run(tmp_path / "run", epochs=3)
    run = load_run(tmp_path / "run")
    # Epoch 3 captures epoch 2's most negative samples; those still among the most negative at the end are kept.
    worst = [set(np.argsort(run.scores(e), kind="stable")[:40].tolist()) for e in (2, 3)]
    assert set(run.preview_ids.tolist()) == worst[0] & worst[1] and len(run.preview_ids) >= 20
    x, _ = _images()
    np.testing.assert_allclose(run.previews, x.numpy()[run.preview_ids])


# --------------------------------------------------------------------------------------------- Hugging Face
def _hf():
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
            max_position_embeddings=16,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    tokens = torch.randint(3, 50, (24, 6), generator=torch.Generator().manual_seed(0))
    items = [
        {"input_ids": t, "attention_mask": torch.ones(6, dtype=torch.long), "labels": int(t[0]) % 3}
        for t in tokens
    ]
    return model, WithIndex(items)


def hf_run(tmp_path, epochs=4, **kwargs):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from gwa.integrations.huggingface import GWATrainerCallback

    class KeepWeights(TrainerCallback):  # after GWA's callback: the weights of every epoch
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, args, state, control, model=None, **kw):
            self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    model, items = _hf()
    args = TrainingArguments(
        str(tmp_path / "out"),
        num_train_epochs=epochs,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        lr_scheduler_type="constant",
        **kwargs,
    )
    cb, keep = GWATrainerCallback(restore_best_weights=True, run_dir=tmp_path / "run"), KeepWeights()
    Trainer(model=model, args=args, train_dataset=items, callbacks=[cb, keep]).train()
    return cb, keep.weights, model, items


@pytest.mark.slow  # a Hugging Face Trainer fit
def test_hf_keeps_the_best_model_on_disk_without_an_eval_set(tmp_path):
    from transformers import AutoModelForSequenceClassification

    cb, weights, model, items = hf_run(tmp_path)
    assert (
        cb.best_model_dir == tmp_path / "out" / "gwa-best"
        and (cb.best_model_dir / "model.safetensors").exists()
    )
    assert (cb.best_model_dir / "gwa_best.json").read_text().startswith(f'{{"epoch": {cb.best_epoch},')
    best = weights[cb.best_epoch - 1]
    saved = AutoModelForSequenceClassification.from_pretrained(cb.best_model_dir).state_dict()
    for name, value in saved.items():
        torch.testing.assert_close(value, best[name], rtol=0, atol=0)
        torch.testing.assert_close(model.state_dict()[name], best[name], rtol=0, atol=0)  # restored in memory
    run = load_run(tmp_path / "run")
    assert run.summary["best_model_dir"] == str(cb.best_model_dir)
    np.testing.assert_array_equal(run.labels, [item["labels"] for item in items])


def test_hf_refuses_label_smoothing_it_cannot_see_through(tmp_path):
    with pytest.raises(ValueError, match=r"label_smoothing_factor=0.1\).*cannot see the targets"):
        hf_run(tmp_path, epochs=1, label_smoothing_factor=0.1)


# ------------------------------------------------------------------------------- reports of every trainer
def _report_and_flag(run_dir: Path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from gwa.cli import main

    assert main(["report", str(run_dir)]) == 0
    assert main(["flag", str(run_dir)]) == 0
    page = (run_dir / "report" / "report.html").read_text()
    flagged = list(csv.DictReader((run_dir / "flagged.csv").open()))
    return page, flagged


def _check_complete_report(run_dir: Path, framework: str):
    run = load_run(run_dir)
    page, flagged = _report_and_flag(run_dir)
    # No banner about a noise mask a real dataset cannot have; the run table is filled.
    assert 'class="note"' not in page and "noise_mask" not in page
    run_table = page[page.index('id="config"') : page.index('id="summary"')]
    for key, value in (
        ("framework", framework),
        ("model", run.config["model"]),
        ("head", run.config["head"]),
        ("epochs run", f"{len(run.epochs)} of"),
        ("labels", "stored"),
    ):
        assert re.search(rf"<td>{re.escape(key)}</td><td>{re.escape(str(value))}", run_table), key
    assert (run_dir / "report" / "curves.png").stat().st_size > 10_000
    assert "training accuracy" in page  # the accuracy axis is not empty
    # The worst-samples table: label and prediction of each sample, as stored.
    table = page[page.index('id="negative"') :]
    headers = re.findall(r"<th>([^<]*)</th>", table)
    assert headers[:4] == ["rank", "sample id", "label", "prediction"] and "mislabeled?" not in headers
    pred = run.scores(run.epochs[-1], "pred")
    for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])[:5]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        sample = int(cells[1])
        assert int(cells[2]) == run.labels[sample]
        if np.isfinite(pred[sample]):
            assert int(cells[3]) == int(pred[sample])
    # gwa flag: every row has its label, and the prediction.
    assert flagged and all(r["label"] == str(run.labels[int(r["sample_id"])]) for r in flagged)
    assert all(r["prediction"] != "" for r in flagged)
    return page


@pytest.mark.slow  # Lightning and HF fits, then three reports
def test_reports_of_lightning_hf_and_plain_loop_runs_are_complete(tmp_path):
    S = _lightning()
    from gwa.integrations.lightning import GWACallback

    S.trainer(EPOCHS, [GWACallback(run_dir=tmp_path / "lightning")]).fit(
        _loss_only_module(S), _xy_loader(S, with_index=True)
    )
    _check_complete_report(tmp_path / "lightning", "lightning")
    hf_run(tmp_path / "hf")
    _check_complete_report(tmp_path / "hf" / "run", "huggingface")
    plain_loop_run(tmp_path / "loop")
    page = _check_complete_report(tmp_path / "loop", "loop")
    assert page.count('class="thumb"') == 20  # 8x8 image previews for the 20 worst samples


def test_monitor_resumed_with_more_epochs_follows_the_new_plan():
    from gwa.integrations import EpochMonitor
    from gwa.torch import EpochResult

    rng = np.random.default_rng(0)
    summaries = [gwa.summarize(np.clip(rng.normal(0.05 * e, 0.2, 50), -1, 1)) for e in range(1, 21)]
    first = EpochMonitor(patience=50)
    first.start(max_epochs=2, num_samples=50, write=False, framework="loop")
    for e in (1, 2):
        first.end_epoch(EpochResult(epoch=e, summary=summaries[e - 1], scores=None))
    resumed = EpochMonitor(patience=50)
    resumed.load_state_dict(first.state_dict())
    resumed.start(max_epochs=20, num_samples=50, write=False, framework="loop")
    for e in range(3, 21):
        resumed.end_epoch(EpochResult(epoch=e, summary=summaries[e - 1], scores=None))
    assert resumed.best_epoch == gwa.select_epoch(summaries, total_epochs=20)
    assert resumed.stopper.warmup == 2  # 10% of the new plan of 20 epochs


def test_label_collector_takes_class_ids_and_skips_soft_targets():
    from gwa.integrations._collect import LabelCollector

    labels = LabelCollector(6)
    assert labels.labels() is None  # nothing seen yet
    labels.observe(torch.tensor([2, 0]), torch.tensor([4, 1]))
    labels.observe(torch.tensor([3]), [0])  # ids as a list
    assert not labels.saw_soft
    labels.observe(torch.tensor([[0.1, 0.7, 0.2]]), [2])  # soft (mixed): not a label, never its argmax
    labels.observe(torch.tensor([1]), None)  # no ids: nothing to record
    assert labels.labels().tolist() == [3, 0, -1, -1, 2, -1] and labels.saw_soft


@pytest.mark.parametrize(
    ("inputs", "kept"),
    [
        (torch.randn(4, 3, 5, 5), (3, 5, 5)),  # channel-first RGB images
        (torch.randn(4, 5, 5), (5, 5)),  # grey images
        (torch.randn(4, 7), (7,)),  # 1-D signals or features
        (torch.randint(0, 9, (4, 7)), None),  # token ids: no picture
        (torch.randn(4, 2, 5, 5, 5), None),  # video-like: not drawable
    ],
)
def test_preview_collector_keeps_drawable_float_inputs_only(inputs, kept):
    from gwa.integrations._collect import PreviewCollector

    previews = PreviewCollector(8)
    previews.observe(inputs, torch.tensor([5, 1, 7, 2]))
    previews.want(np.zeros(8))
    out = previews.previews()
    if kept is None:
        assert out is None and not previews.enabled
    else:
        ids, x = out
        assert ids.tolist() == [1, 2, 5, 7] and x.shape == (4, *kept)
        np.testing.assert_array_equal(x[2], inputs[0].numpy())  # id 5 was the first row


def test_lightning_says_what_to_do_when_the_head_ran_without_autograd():
    S = _lightning()
    from gwa.integrations.lightning import GWACallback

    class NoGradForward(S.Module):
        def training_step(self, batch, batch_idx):
            with torch.no_grad():
                self.net(batch[0])
            return (self.net[0].weight ** 2).sum()

    with pytest.raises(
        RuntimeError, match=r"head 'net.2' did not run in training mode with autograd.*no_grad"
    ):
        S.trainer(1, [GWACallback()]).fit(NoGradForward(), _xy_loader(S, with_index=True))


def test_hf_image_model_stores_pixel_values_as_previews(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

    from gwa.integrations.huggingface import GWATrainerCallback

    torch.manual_seed(0)
    model = ViTForImageClassification(
        ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=3,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    )
    pixels = torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    items = WithIndex([{"pixel_values": p, "labels": i % 3} for i, p in enumerate(pixels)])
    args = TrainingArguments(
        str(tmp_path / "out"),
        num_train_epochs=2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        per_device_train_batch_size=8,
    )
    cb = GWATrainerCallback(run_dir=tmp_path / "run")
    Trainer(model=model, args=args, train_dataset=items, callbacks=[cb]).train()
    run = load_run(tmp_path / "run")
    assert run.config["head"] == "classifier" and run.preview_ids.tolist() == list(range(24))
    np.testing.assert_allclose(run.previews, pixels.numpy())
    np.testing.assert_array_equal(run.labels, np.arange(24) % 3)


def test_hf_best_folder_is_swapped_in_whole(tmp_path):
    """A crash while saving a new best (here: save_pretrained raising) leaves the previous best intact."""
    from gwa.integrations.huggingface import GWATrainerCallback

    class Model(torch.nn.Module):
        def __init__(self, fail=False):
            super().__init__()
            self.fail, self.head = fail, torch.nn.Linear(2, 2)

        def save_pretrained(self, folder):
            if self.fail:
                (folder / "half-written.bin").write_bytes(b"x")
                raise OSError(28, "No space left on device")
            torch.save(self.state_dict(), folder / "model.pt")

    class Args:
        output_dir = str(tmp_path / "out")

    cb = GWATrainerCallback(restore_best_weights=True)
    cb._save_best(Args(), Model(), 2, None)
    best = tmp_path / "out" / "gwa-best"
    assert json.loads((best / "gwa_best.json").read_text())["epoch"] == 2
    with pytest.raises(OSError, match="No space left"):
        cb._save_best(Args(), Model(fail=True), 3, None)
    assert sorted(p.name for p in best.iterdir()) == ["gwa_best.json", "model.pt"]
    assert json.loads((best / "gwa_best.json").read_text())["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gwa-best"
    ]  # the half-written copy is gone
    cb._save_best(Args(), Model(), 4, None)
    assert json.loads((best / "gwa_best.json").read_text())["epoch"] == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gwa-best"]  # no staging or old folder
