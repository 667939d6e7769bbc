import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gwa
from gwa import cli, policy
from gwa.rundir import load_run
from gwa.runner import checkpoint, train_torch
from gwa.runner.config import RunConfig
from gwa.runner.data import load_digits, prepare
from gwa.runner.models import build_model
from gwa.runner.train import run_training

TINY = {
    "dataset": "digits",
    "num_train": 240,
    "model": "mlp",
    "hidden": (16,),
    "batch_size": 64,
    "quiet": True,
}


def test_scores_match_the_numpy_core_on_full_batch_sgd(tmp_path):
    """One batch per epoch: epoch 1 scores the initial model, epoch 2 the model after one SGD step."""
    config = RunConfig(
        **{**TINY, "batch_size": 1000},
        optimizer="sgd",
        momentum=0.0,
        lr=0.5,
        epochs=2,
        out=str(tmp_path / "run"),
    )
    out = run_training(config, progress=False)
    run = load_run(out)
    data = prepare(config)
    torch.manual_seed(config.seed)
    model = build_model("mlp", input_shape=data.input_shape, num_classes=10, hidden=(16,))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for epoch in (1, 2):
        emb = model.body(x)
        logits = model.head(emb)
        expected = gwa.alignment(
            logits.detach().double().numpy(),
            data.y_train,
            emb.detach().double().numpy(),
            model.head.weight.detach().double().numpy(),
        )
        np.testing.assert_allclose(run.scores(epoch), expected, rtol=2e-5, atol=2e-6)
        per_sample_loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        np.testing.assert_allclose(run.scores(epoch, "loss"), per_sample_loss.detach().numpy(), rtol=1e-5)
        assert run.metrics[epoch - 1]["train_loss"] == pytest.approx(
            float(per_sample_loss.mean().detach()), rel=1e-5
        )
        assert run.metrics[epoch - 1]["gwa_paper"] == pytest.approx(gwa.gwa_value(expected), rel=1e-4)
        assert run.metrics[epoch - 1]["gwa"] == pytest.approx(gwa.summarize(expected).gwa, rel=1e-4)
        loss = per_sample_loss.mean()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    # The last checkpoint holds that model: its test accuracy is the logged one.
    from gwa.runner import checkpoint

    state = torch.load(
        checkpoint.marked_file(out, "last"), weights_only=True
    )  # plain tensors: no pickled code
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], tensor, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    assert run.metrics[-1]["test_acc"] == pytest.approx(float((pred == data.y_test).mean()))


def test_run_directory_is_complete_and_consistent(tmp_path):
    d = prepare(RunConfig(dataset="digits"))
    np.savez(tmp_path / "same_as_test.npz", x=d.raw(d.x_test), y=d.y_test)
    config = RunConfig(
        **TINY,
        epochs=3,
        noise="symmetric",
        noise_rate=0.25,
        val_frac=0.2,
        eval_sets={"copy": str(tmp_path / "same_as_test.npz")},
        gradient_disparity=True,
        out=str(tmp_path / "run"),
    )
    run = load_run(run_training(config, progress=False))
    assert run.complete and run.epochs == [1, 2, 3]
    assert run.noise_mask.sum() == np.sum(run.labels != run.clean_labels) > 0
    assert sorted(run.signals()) == ["alignment", "el2n", "loss", "margin", "p_gold", "pred"]
    assert np.isfinite(run.score_matrix()).all()  # every sample is seen every epoch
    rows = run.metrics
    for r in rows:
        assert r["eval_copy_acc"] == r["test_acc"]  # the eval set is the test set
        assert 0 <= r["val_acc"] <= 1 and 0 <= r["val_acc_clean"] <= 1
        assert r["grad_disparity"] > 0 and r["n_scores"] == run.labels.size
    assert rows[0]["prediction_changes"] is None
    for prev, now, r in zip(run.score_matrix("pred"), run.score_matrix("pred")[1:], rows[1:]):
        assert r["prediction_changes"] == int((prev != now).sum())
    summary = run.summary
    assert summary["default"] == "gwa" and summary["criteria"]["last"]["epoch"] == 3
    for info in summary["criteria"].values():
        assert info["test_acc"] == rows[info["epoch"] - 1]["test_acc"]
    assert summary["noise"]["num_noisy"] == int(run.noise_mask.sum())
    # The best checkpoint is the default criterion's epoch, the core policy's choice over the rows.
    assert summary["best_checkpoint"]["epoch"] == summary["criteria"]["gwa"]["epoch"]
    assert summary["criteria"]["gwa"]["epoch"] == gwa.select_epoch(rows, total_epochs=3)
    assert {k: v["epoch"] for k, v in summary["criteria"].items()} == policy.select_all(rows, total_epochs=3)
    # Previews: all samples (small set), un-normalised.
    assert np.array_equal(run.preview_ids, np.arange(run.labels.size))
    p = prepare(config)
    np.testing.assert_allclose(run.previews, p.raw(p.x_train)[..., 0], atol=1e-5)
    from gwa.runner.data import load_digits

    np.testing.assert_allclose(run.previews, load_digits().x_train[p.source_index, ..., 0], atol=1e-5)


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, monkeypatch):
    common = dict(
        **TINY,
        epochs=4,
        optimizer="adam",
        schedule="cosine",
        noise="symmetric",
        noise_rate=0.2,
        val_frac=0.1,
        early_stop=3,
    )
    full = load_run(run_training(RunConfig(**common, out=str(tmp_path / "full")), progress=False))
    original = train_torch._save_checkpoints

    def interrupt_at_epoch_3(run_dir, ckpt_dir, epoch, *args):
        if epoch == 3:  # epoch 3 is logged, its checkpoint is not written
            raise KeyboardInterrupt
        return original(run_dir, ckpt_dir, epoch, *args)

    monkeypatch.setattr(train_torch, "_save_checkpoints", interrupt_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(RunConfig(**common, out=str(tmp_path / "cut")), progress=False)
    cut = load_run(tmp_path / "cut")
    assert cut.epochs == [1, 2, 3] and not cut.complete  # finished epochs are kept
    monkeypatch.setattr(train_torch, "_save_checkpoints", original)
    resumed = load_run(
        run_training(RunConfig(**common, out=str(tmp_path / "cut"), resume=True), progress=False)
    )
    assert _without_time(resumed.metrics) == _without_time(full.metrics)
    for signal in ("alignment", "loss", "pred"):
        np.testing.assert_array_equal(resumed.score_matrix(signal), full.score_matrix(signal))
    assert resumed.summary["criteria"] == full.summary["criteria"]
    assert resumed.classes == full.classes and len(full.classes) == 4  # classes.jsonl: redone epochs replaced
    assert resumed.summary["noise_estimate"] == full.summary["noise_estimate"]
    assert resumed.summary == full.summary  # the whole RunSummary: decision, diagnostics, best checkpoint
    # Resumed at its end (no epoch left): the monitor replays the logged rows, and the summary stays the same.
    again = load_run(
        run_training(RunConfig(**common, out=str(tmp_path / "cut"), resume=True), progress=False)
    )
    assert again.summary == full.summary and _without_time(again.metrics) == _without_time(full.metrics)


def test_early_stop_follows_the_stopper_on_the_default_criterion(tmp_path):
    config = RunConfig(**TINY, epochs=12, early_stop=1, lr=0.05, out=str(tmp_path / "run"))
    run = load_run(run_training(config, progress=False))
    stopper = gwa.EarlyStopper(patience=1, total_epochs=12)  # warm-up: epoch 1
    # the value gwa's default criterion maximises: mean / (excess kurtosis + 3), recomputed by hand
    values = [r["align_mean"] / (r["align_excess_kurtosis"] + 3.0) for r in run.metrics]
    assert [r["gwa"] for r in run.metrics] == pytest.approx(values, rel=1e-12)
    stops = [stopper.step(v) for v in values]
    assert stops[-1] or len(values) == 12
    assert not any(stops[:-1])
    assert run.summary["epochs_run"] == len(values)
    # The best checkpoint and the summary's choice are the stopper's best epoch (1-based).
    assert (
        run.summary["criteria"]["gwa"]["epoch"]
        == stopper.best_epoch
        == run.summary["best_checkpoint"]["epoch"]
    )
    assert stopper.best_epoch == gwa.select_epoch(run.metrics, total_epochs=12)


def _cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _tiny_run(out: str) -> list[str]:
    """A 2-epoch digits MLP run into ``out``, quiet."""
    return [
        "train",
        "--dataset",
        "digits",
        "--num-train",
        "200",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--out",
        out,
        "-q",
    ]


def test_cli_train_overwrite_resume_and_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = _tiny_run(out)
    assert _cli(base, capsys)[0] == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["status"] == "complete" and config["hidden"] == [16] and config["format"] == 2
    code, err = _cli(base, capsys)
    assert code == 2 and "is not empty; pass --resume to continue it or --overwrite" in err
    assert _cli([*base, "--overwrite"], capsys)[0] == 0
    assert load_run(out).epochs == [1, 2]
    assert _cli(["train", "--out", out, "--resume", "--epochs", "3", "-q"], capsys)[0] == 0
    assert load_run(out).epochs == [1, 2, 3]
    code, err = _cli(["train", "--out", out, "--resume", "--lr", "0.5", "-q"], capsys)
    assert code == 2 and "Cannot change `lr` when resuming" in err
    code, err = _cli(["train", "--out", str(tmp_path / "nothing"), "--resume", "-q"], capsys)
    assert code == 2 and "no config.json" in err
    cfg_path = tmp_path / "run" / "config.json"
    cfg_path.write_text(json.dumps({**config, "format": 99}))
    code, err = _cli(["train", "--out", out, "--resume", "-q"], capsys)
    assert code == 2 and "format 99" in err


def test_cli_train_on_some_classes_then_fine_tune_the_body_on_the_others(tmp_path, capsys):
    pre = str(tmp_path / "pre")
    assert _cli([*_tiny_run(pre), "--classes", "0,1,2,3,4"], capsys)[0] == 0
    run = load_run(pre)
    assert set(run.labels.tolist()) == {0, 1, 2, 3, 4} and json.loads(
        (tmp_path / "pre" / "config.json").read_text()
    )["classes"] == [0, 1, 2, 3, 4]
    state = train_torch.load_checkpoint(checkpoint.marked_file(pre, "last"))["model"]
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, tmp_path / "body.pt")
    out = str(tmp_path / "ft")
    argv = [
        *_tiny_run(out),
        "--classes",
        "5,6,7,8,9",
        "--init-checkpoint",
        str(tmp_path / "body.pt"),
        "--finetune",
    ]
    assert _cli(argv, capsys)[0] == 0
    ft = load_run(out)
    # The fine-tuning run trained on the other five classes, relabelled 0-4, and started from the body.
    source_index = np.load(Path(out) / "source_index.npy")
    assert np.array_equal(load_digits().y_train[source_index], ft.labels + 5)
    assert ft.config["finetune"] is True and "gwa" in ft.summary["criteria"]


def test_cli_train_refuses_to_resume_a_format1_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = _tiny_run(out)
    assert _cli(argv, capsys)[0] == 0
    # A run of format 1 (an older gwa) is read, but never resumed: its rows have other keys.
    cfg_path = tmp_path / "run" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "format": 1}))
    metrics_before = (tmp_path / "run" / "metrics.jsonl").read_text()
    code, err = _cli(["train", "--out", out, "--resume", "-q"], capsys)
    assert (
        code == 2
        and "it is a run of format 1 (an older gwa); this gwa writes format 2. Start a new run." in err
    )
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics_before
    assert load_run(out).epochs == [1, 2]  # still read


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--dataset", "mnist"],
            "Expected `dataset` to be one of digits, mnist1d, fashion-mnist, cifar10, imagefolder",
        ),
        (["--model", "vgg16"], "Expected `model` to be one of mlp, cnn, resnet or timm:<name>; got 'vgg16'"),
        (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "has no train-images-idx3-ubyte.gz"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "`device`"),
        (
            ["--classes", "3,12"],
            "Expected `classes` to be class ids in [0, 9] (digits has 10 classes); got [3, 12]",
        ),
        (["--classes", "3"], "Expected `classes` to be two or more distinct class ids >= 0; got (3,)"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    code, err = _cli(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_large_inputs_preview_the_most_negatively_aligned_samples(tmp_path, monkeypatch):
    from gwa.runner import train

    monkeypatch.setattr(train, "PREVIEW_ALL_BYTES", 1000)
    monkeypatch.setattr(train, "PREVIEW_COUNT", 10)
    config = RunConfig(**TINY, epochs=4, noise="symmetric", noise_rate=0.3, out=str(tmp_path / "run"))
    run = load_run(run_training(config, progress=False))
    recent_mean = run.score_matrix()[-3:].mean(axis=0)
    expected = np.sort(np.argsort(recent_mean, kind="stable")[:10])
    assert np.array_equal(run.preview_ids, expected)
    p = prepare(config)
    np.testing.assert_allclose(run.previews, p.raw(p.x_train[expected])[..., 0], atol=1e-5)


def test_init_checkpoint_loads_matching_tensors_and_keeps_a_new_head(tmp_path):
    torch.manual_seed(0)
    source = build_model("mlp", input_shape=(8, 8, 1), num_classes=10, hidden=(16,))
    torch.save(source.state_dict(), tmp_path / "source.pt")
    torch.manual_seed(1)
    target = build_model("mlp", input_shape=(8, 8, 1), num_classes=3, hidden=(16,))
    head_before = target.head.weight.detach().clone()
    train_torch.load_init_checkpoint(target, tmp_path / "source.pt")
    assert torch.equal(target.body[1].weight, source.body[1].weight)
    assert torch.equal(target.head.weight, head_before)  # 3 classes: the 10-class head is not loaded
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "unrelated.pt")
    with pytest.raises(ValueError, match="shares no tensor"):
        train_torch.load_init_checkpoint(target, tmp_path / "unrelated.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_torch.load_init_checkpoint(target, tmp_path / "missing.pt")


def test_lr_schedules_per_step():
    f = train_torch.lr_factor
    assert f(7, schedule="constant", total_steps=10, warmup_steps=0) == 1.0
    assert f(0, schedule="cosine", total_steps=10, warmup_steps=0) == 1.0
    assert f(5, schedule="cosine", total_steps=10, warmup_steps=0) == pytest.approx(0.5)
    assert f(1, schedule="warmup_cosine", total_steps=10, warmup_steps=4) == pytest.approx(0.5)
    assert f(4, schedule="warmup_cosine", total_steps=10, warmup_steps=4) == 1.0
    assert f(7, schedule="warmup_cosine", total_steps=10, warmup_steps=4) == pytest.approx(0.5)
