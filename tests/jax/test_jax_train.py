"""``gwa train --backend jax``: the same optimizers, schedules, signals and architectures as the torch backend,
and a tiny run that writes a run directory ``gwa.rundir.load_run`` reads, resumes exactly, and matches the torch
backend's contract (metric keys, score files)."""

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp
import numpy as np
import optax

import gwa
import jax
import torch
from gwa.rundir import load_run
from gwa.runner import models as torch_models
from gwa.runner import models_jax, train_jax, train_torch
from gwa.runner.config import RunConfig
from gwa.runner.train import run_training
from gwa.torch._signals import compute_signals

torch.set_num_threads(1)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_lr_schedule_equals_the_torch_backend(schedule):
    config = RunConfig(
        schedule=schedule, epochs=5, warmup_epochs=2 if schedule == "warmup_cosine" else 0, lr=0.1
    )
    expected = [
        0.1
        * train_torch.lr_factor(s, schedule=schedule, total_steps=35, warmup_steps=config.warmup_epochs * 7)
        for s in range(40)
    ]
    host = train_jax.lr_schedule(config, 7, xp=np)
    np.testing.assert_allclose([float(host(s)) for s in range(40)], expected, rtol=1e-15, atol=0)
    device = jax.jit(jax.vmap(train_jax.lr_schedule(config, 7)))(jnp.arange(40))
    np.testing.assert_allclose(np.asarray(device), expected, rtol=1e-6, atol=1e-7)  # float32 near 0


@pytest.mark.parametrize(
    ("optimizer", "weight_decay"),
    [("sgd", 0.0), ("sgd", 0.05), ("adam", 0.0), ("adam", 0.05), ("adamw", 0.05)],
)
def test_optimizer_trajectory_equals_torch(optimizer, weight_decay):
    config = RunConfig(
        optimizer=optimizer, weight_decay=weight_decay, lr=0.05, momentum=0.9, schedule="cosine", epochs=2
    )
    rng = np.random.default_rng(0)
    p0, grads = rng.normal(size=6).astype(np.float32), rng.normal(size=(8, 6)).astype(np.float32)
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = train_torch.build_optimizer(config, [param])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: train_torch.lr_factor(s, schedule="cosine", total_steps=8, warmup_steps=0)
    )
    tx = train_jax.build_optimizer(config, train_jax.lr_schedule(config, 4))
    p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    update = jax.jit(tx.update)
    for g in grads:
        param.grad = torch.from_numpy(g.copy())
        opt.step()
        sched.step()
        updates, state = update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(np.asarray(p), param.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(p0, np.asarray(p))


def test_signals_equal_the_torch_tracker_signals():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(32, 7)).astype(np.float32) * 3, rng.integers(0, 7, 32)
    names = ("loss", "margin", "p_gold", "el2n", "pred", "correct")
    got = jax.jit(train_jax.per_sample_signals, static_argnums=2)(
        jnp.asarray(logits), jnp.asarray(labels), names
    )
    expected = compute_signals(torch.from_numpy(logits), torch.from_numpy(labels), names, soft=False)
    for name in names:
        np.testing.assert_allclose(
            np.asarray(got[name]), expected[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.slow  # jit-compiles each Flax model
@pytest.mark.parametrize(("name", "input_shape"), [("mlp", (8, 8, 1)), ("cnn", (8, 8, 1)), ("cnn", (40,))])
def test_flax_models_have_the_torch_architecture_and_init_range(name, input_shape):
    kw = {"input_shape": input_shape, "num_classes": 10, "hidden": (32, 16), "width": 8}
    flax_model = models_jax.build_model(name, **kw)
    params = models_jax.init_params(flax_model, input_shape, seed=0)
    again = models_jax.init_params(flax_model, input_shape, seed=0)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), params, again))
    torch_model = torch_models.build_model(name, **kw)
    flax_sizes = sorted(int(v.size) for v in jax.tree.leaves(params))
    torch_sizes = sorted(p.numel() for p in torch_model.parameters())
    assert flax_sizes == torch_sizes
    assert params["head"]["kernel"].shape == (torch_model.head.in_features, 10)
    x = np.random.default_rng(2).normal(size=(3, *input_shape)).astype(np.float32)
    assert jax.jit(flax_model.apply)({"params": params}, x).shape == (3, 10)
    layers = jax.tree.leaves(params, is_leaf=lambda t: isinstance(t, dict) and "kernel" in t)
    torch_layers = [m for m in torch_model.modules() if hasattr(m, "weight")]
    assert len(layers) == len(torch_layers)
    for layer in layers:
        fan_in = int(np.prod(layer["kernel"].shape[:-1]))
        bound = 1 / np.sqrt(fan_in)  # torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases
        for v in (np.asarray(layer["kernel"]), np.asarray(layer["bias"])):
            assert np.abs(v).max() <= bound and np.abs(v).max() > 0.5 * bound


def test_unsupported_options_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"Expected `model` to be one of mlp, cnn with backend 'jax'; got 'resnet'"
    ):
        models_jax.build_model("resnet", input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(ValueError, match=r"got 'mps' \(jax has no Metal backend"):
        train_jax.resolve_device("mps")
    assert train_jax.resolve_device("cpu").platform == "cpu"
    if jax.default_backend() == "cpu":  # this machine has no GPU for jax
        with pytest.raises(ValueError, match=r"got 'cuda', which jax does not see on this machine"):
            train_jax.resolve_device("cuda")


def test_torch_init_checkpoint_is_refused_before_training(tmp_path):
    config = _tiny(tmp_path, "init", init_checkpoint=str(tmp_path / "weights.pt"))
    with pytest.raises(
        ValueError, match=r"`init_checkpoint` \(a torch state_dict\) cannot initialise the jax"
    ):
        run_training(config, progress=False)
    assert not (tmp_path / "init" / "metrics.jsonl").exists()


def _tiny(tmp_path, name, **changes):
    base = {
        "dataset": "digits",
        "num_train": 300,
        "noise": "symmetric",
        "noise_rate": 0.2,
        "hidden": (32,),
        "batch_size": 64,
        "epochs": 3,
        "backend": "jax",
        "quiet": True,
        "out": str(tmp_path / name),
        "signals": ("loss", "margin", "pred"),
    }
    return RunConfig(**{**base, **changes})


def _rows_without_time(run):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in run.metrics]


@pytest.mark.slow  # three runs of `gwa train`'s jax backend
def test_tiny_jax_run_writes_a_run_directory_that_resumes_exactly(tmp_path):
    run = load_run(run_training(_tiny(tmp_path, "full"), progress=False))
    assert run.complete and run.config["backend"] == "jax" and run.epochs == [1, 2, 3]
    n = len(run.labels)
    assert n == 300 and run.noise_mask.sum() == 60
    for row in run.metrics:
        scores = run.scores(row["epoch"])
        assert scores.shape == (n,) and np.isfinite(scores).all() and row["n_scores"] == n
        # The streamed device moments and the per-sample store come out of the same step.
        np.testing.assert_allclose(row["align_mean"], scores.astype(np.float64).mean(), rtol=1e-5)
    assert set(run.signals()) == {"alignment", "loss", "margin", "pred"}
    assert {"gwa", "gwa_paper", "align_mean", "last", "oracle"} <= set(run.summary["criteria"])
    # The default criterion's epoch and the best checkpoint are the core policy's choice over the rows.
    assert run.summary["criteria"]["gwa"]["epoch"] == gwa.select_epoch(run.metrics, total_epochs=3)
    assert run.summary["best_checkpoint"]["epoch"] == run.summary["criteria"]["gwa"]["epoch"]
    for row in run.metrics:
        assert row["gwa"] == pytest.approx(row["align_mean"] / (row["align_excess_kurtosis"] + 3), rel=1e-12)
    assert run.metrics[1]["train_loss"] < run.metrics[0]["train_loss"]

    partial = _tiny(tmp_path, "resumed", epochs=2)
    run_training(partial, progress=False)
    resumed = load_run(run_training(partial.replace(epochs=3, resume=True), progress=False))
    assert _rows_without_time(resumed) == _rows_without_time(run)
    np.testing.assert_array_equal(resumed.scores(3), run.scores(3))


@pytest.mark.slow  # a `gwa train` run on each backend
def test_jax_and_torch_backends_write_the_same_contract(tmp_path):
    jax_run = load_run(run_training(_tiny(tmp_path, "jax", epochs=2), progress=False))
    torch_run = load_run(
        run_training(_tiny(tmp_path, "torch", epochs=2, backend="torch", device="cpu"), progress=False)
    )
    assert [set(r) for r in jax_run.metrics] == [set(r) for r in torch_run.metrics]
    assert jax_run.signals() == torch_run.signals()
    assert set(jax_run.summary["criteria"]) == set(torch_run.summary["criteria"])
    # Per-class evidence and the noise map: the same files and keys from either backend (one EpochLoop), each
    # the core's evidence over the run's own scores, labels and predictions.
    assert [r["epoch"] for r in jax_run.classes] == [r["epoch"] for r in torch_run.classes] == [1, 2]
    assert set(jax_run.summary["noise_estimate"]) == set(torch_run.summary["noise_estimate"])
    for epoch, record in zip(jax_run.epochs, jax_run.class_evidence(), strict=True):
        pred = jax_run.scores(epoch, "pred").astype(np.int64)
        assert record == gwa.class_evidence(jax_run.scores(epoch), jax_run.labels, pred, 10)
    np.testing.assert_array_equal(jax_run.labels, torch_run.labels)  # same data, noise and order
    for key in ("step", "lr", "n_scores"):
        assert jax_run.series(key).tolist() == torch_run.series(key).tolist()
    # The analysis side reads a jax run like a torch run.
    from gwa.report import compare_runs, flag_samples

    assert len(compare_runs([jax_run, torch_run]).rows) == 2
    flagged = flag_samples(jax_run, top=20)
    assert flagged.sample_ids.size == 300 and int(flagged.flagged.sum()) == 20


@pytest.mark.slow
def test_jax_runner_logs_to_tensorboard(tmp_path):
    """`gwa train --backend jax --tensorboard DIR`: each epoch's gwa, decision and alignment histogram, then the
    chosen epoch, read back from the event file and matched to the run directory."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = load_run(
        run_training(_tiny(tmp_path, "tb", epochs=10, tensorboard=str(tmp_path / "tb")), progress=False)
    )
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("gwa")] == run.epochs == list(range(1, 11))
    assert np.isnan(events.Scalars("gwa")[0].value)  # the warm-up epoch (1 of 10) is never chosen
    np.testing.assert_allclose(
        [e.value for e in events.Scalars("gwa")[1:]], [r["gwa"] for r in run.metrics[1:]], rtol=1e-6
    )
    # best_epoch (summary.json's name): the best so far each epoch, then the choice at the last epoch's step.
    best = events.Scalars("best_epoch")
    assert [e.step for e in best] == [*range(1, 11), 10]
    assert best[-1].value == run.summary["best_epoch"] == run.summary["criteria"]["gwa"]["epoch"]
    hists = events.Histograms("gwa/alignment")
    assert len(hists) == 10 and all(h.histogram_value.num == 300 for h in hists)
