"""The paper's regime and the re-execution check: batch augmentation, perturbed initial weights, thread count."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gwa.runner import augment
from gwa.runner.config import RunConfig
from gwa.runner.models import build_model, perturb_parameters


def _shifted(img, dy, dx):
    """Reference: ``img (C, H, W)`` shifted by (dy, dx) with zero fill, by hand."""
    out = np.zeros_like(img)
    _c, h, w = img.shape
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_each_augmented_image_is_a_shift_within_two_pixels_possibly_flipped():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    out = augment.augment_batch(x, augment.epoch_generator(0, 1)).numpy()
    assert out.shape == x.shape
    for b in range(2):
        candidates = [
            (dy, dx, flip)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for flip in (False, True)
            if np.array_equal(
                out[b], (lambda s: s[:, :, ::-1] if flip else s)(_shifted(x[b].numpy(), dy, dx))
            )
        ]
        assert len(candidates) == 1
    # the same (seed, epoch) draws the same augmentation; another epoch another one
    again = augment.augment_batch(x, augment.epoch_generator(0, 1)).numpy()
    assert np.array_equal(out, again)
    x8 = torch.rand(64, 1, 8, 8)
    assert not torch.equal(
        augment.augment_batch(x8, augment.epoch_generator(0, 1)),
        augment.augment_batch(x8, augment.epoch_generator(0, 2)),
    )


def test_signals_are_shifted_not_flipped():
    x = torch.arange(1, 11, dtype=torch.float32).repeat(50, 1)  # (50, 10)
    out = augment.augment_batch(x, augment.epoch_generator(3, 1))
    assert out.shape == x.shape
    for row in out.numpy():
        nz = row[row != 0]
        assert nz.size >= 8 and np.all(np.diff(nz) == 1)  # a contiguous, unflipped window of 1..10
    with pytest.raises(ValueError, match=r"Expected a batch of images \(B, C, H, W\) or signals"):
        augment.augment_batch(torch.zeros(2, 3, 4, 5, 6), augment.epoch_generator(0, 1))


def test_perturbed_initial_weights_move_by_about_one_millionth():
    model = build_model("cnn", input_shape=(8, 8, 1), num_classes=3, width=4)
    before = [p.detach().clone() for p in model.parameters()]
    perturb_parameters(model, 1e-6, seed=2)
    params = [p.detach() for p in model.parameters()]
    rel = torch.cat([((p - b) / b).flatten() for p, b in zip(params, before) if b.abs().min() > 1e-3])
    assert 2e-7 < float(rel.abs().mean()) < 2e-6 and float(rel.abs().max()) < 1e-5
    other = build_model("cnn", input_shape=(8, 8, 1), num_classes=3, width=4)
    other.load_state_dict(dict(zip(model.state_dict(), before)), strict=False)
    perturb_parameters(other, 1e-6, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    with pytest.raises(ValueError, match=r"Expected `relative` in \[0, 1\); got 2"):
        perturb_parameters(model, 2, seed=0)


def test_options_are_validated():
    with pytest.raises(ValueError, match=r"Expected `init_perturb` in \[0, 1\); got -1e-06"):
        RunConfig(init_perturb=-1e-6)
    with pytest.raises(ValueError, match="Expected `threads` to be an integer >= 1; got 0"):
        RunConfig(threads=0)
    with pytest.raises(ValueError, match="need backend 'torch'; got backend='jax'"):
        RunConfig(backend="jax", augment=True)


@pytest.mark.slow
def test_paper_regime_run_and_a_perturbed_rerun(tmp_path):
    from gwa.rundir import load_run
    from gwa.runner.train import run_training

    base = {
        "dataset": "digits",
        "model": "resnet",
        "width": 4,
        "num_train": 300,
        "epochs": 3,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "schedule": "warmup_cosine",
        "warmup_epochs": 1,
        "seed": 0,
        "quiet": True,
    }
    runs = {}
    for name, extra in (("plain", {}), ("augment", {"augment": True}), ("again", {"augment": True}),
                        ("perturbed", {"augment": True, "init_perturb": 1e-6, "threads": 1})):  # fmt: skip
        out = tmp_path / name
        run_training(RunConfig(**base, **extra, out=str(out)), progress=False)
        runs[name] = [r["train_loss"] for r in load_run(out).metrics]
    assert json.loads((tmp_path / "augment" / "config.json").read_text())["augment"] is True
    assert runs["augment"] == runs["again"]  # deterministic
    assert runs["augment"] != runs["plain"]  # augmentation changes training
    assert runs["perturbed"] != runs["augment"]  # the perturbation reaches the trajectory...
    assert np.allclose(runs["perturbed"], runs["augment"], rtol=1e-2)  # ...without changing the recipe
