"""Fixture run directories written with gwa.rundir.RunWriter, simulating a realistic noisy-label run."""

from __future__ import annotations

import numpy as np
import pytest

import gwa
from gwa.rundir import RunWriter


def _simulate_run(
    path,
    *,
    n=240,
    epochs=12,
    noise_frac=0.3,
    previews="image",
    complete=True,
    summary=True,
    seed=0,
    config=None,
    quality=0.0,
):
    """Write a run directory: clean samples' alignment rises positive, flipped ones drift negative.

    Test accuracy rises, then falls (memorisation); ``quality`` shifts accuracy and mean alignment together
    (used to build runs with a known ranking). Returns the noise mask.
    """
    rng = np.random.default_rng(seed)
    noise = np.zeros(n, bool)
    noise[rng.choice(n, round(noise_frac * n), replace=False)] = True
    clean_labels = rng.integers(0, 10, n)
    labels = np.where(noise, (clean_labels + rng.integers(1, 10, n)) % 10, clean_labels)
    cfg = {
        "name": path.name,
        "dataset": "digits",
        "model": "mlp",
        "noise": "symmetric",
        "noise_rate": noise_frac,
        "epochs": epochs,
        "seed": seed,
    }
    writer = RunWriter(
        path, {**cfg, **(config or {})}, n, labels=labels, clean_labels=clean_labels, noise_mask=noise
    )
    offset = rng.normal(0.0, 0.04, n)  # per-sample difficulty, constant over epochs
    hard = ~noise & (rng.random(n) < 0.08)  # atypical clean samples: negative early, learned later
    memorised = noise & (rng.random(n) < 0.15)  # flipped samples the network ends up memorising
    summaries, test_accs = [], []
    for e in range(1, epochs + 1):
        rise = 1 - np.exp(-e / 3)
        mu = np.where(noise, 0.04 - 0.6 * (1 - np.exp(-e / 6)), 0.05 + 0.35 * rise + quality)
        mu = mu - 0.5 * np.exp(-e / 5) * hard + 0.8 * (1 - np.exp(-max(0, e - 6) / 3)) * memorised
        scores = np.clip(mu + offset + rng.normal(0, 0.05, n), -1, 1)
        scores[rng.choice(n, 3, replace=False)] = np.nan  # a few samples unseen this epoch (drop_last)
        s = gwa.summarize(scores[np.isfinite(scores)])
        test_acc = 0.55 + 0.3 * rise - 0.025 * max(0, e - 7) + quality
        row = {
            "epoch": e,
            "step": e * 10,
            "lr": 0.1,
            "train_loss": 2.0 / e,
            "train_acc": min(1.0, 0.5 + 0.05 * e),
            **s.metrics(),
            "val_acc": test_acc + rng.normal(0, 0.01),
            "test_acc": test_acc,
            "wall_time": 0.5 * e,
        }
        writer.log_epoch(row, {"alignment": scores, "loss": -np.log(np.clip(0.5 + scores / 2, 1e-3, 1))})
        summaries.append(s)
        test_accs.append(test_acc)
    if previews == "image":
        yy, xx = np.mgrid[0:8, 0:8]
        imgs = np.stack([np.sin(xx * (1 + i % 3) / 3.0) * np.cos(yy * (1 + i % 4) / 4.0) for i in range(n)])
        writer.write_previews(np.arange(n), imgs.astype(np.float32))
    elif previews == "signal":
        t = np.linspace(0, 1, 40)
        writer.write_previews(np.arange(n), np.stack([np.sin(2 * np.pi * (1 + i % 5) * t) for i in range(n)]))
    if summary:
        g = gwa.select_epoch(summaries, total_epochs=epochs)  # the default criterion, 1-based
        o = int(np.argmax(test_accs)) + 1
        writer.write_summary(
            {
                "default": "gwa",
                "noise": {"kind": "symmetric", "rate_requested": 0.3, "num_noisy": int(noise.sum())},
                "realised_noise_rate": float(noise.mean()),
                "criteria": {
                    "gwa": {"epoch": g, "test_acc": test_accs[g - 1]},
                    "oracle": {"epoch": o, "test_acc": test_accs[o - 1]},
                    "last": {"epoch": epochs, "test_acc": test_accs[-1]},
                },
            }
        )
    if complete:
        writer.finish()
    return noise


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    _simulate_run(path)
    return path


@pytest.fixture
def commands(monkeypatch):
    """gwa.cli.main limited to the report commands: these tests do not depend on the trainer's imports."""
    import gwa.cli

    monkeypatch.setattr(gwa.cli, "COMMANDS", {k: gwa.cli.COMMANDS[k] for k in ("report", "flag", "compare")})
    return gwa.cli.main


def _write_run(
    path,
    matrix=None,
    *,
    metrics=None,
    noise_mask=None,
    labels=None,
    summary=None,
    complete=True,
    num_samples=None,
):
    """A hand-built run: per-epoch alignment ``matrix`` (E, N) and/or explicit metric rows (one per epoch).

    Metric rows default to :meth:`gwa.EpochSummary.metrics` of the matrix's finite scores.
    """
    matrix = None if matrix is None else np.asarray(matrix, dtype=np.float64)
    n = num_samples or (matrix.shape[1] if matrix is not None else 4)
    writer = RunWriter(path, {"dataset": "hand-built"}, n, labels=labels, noise_mask=noise_mask)
    epochs = len(metrics) if metrics is not None else matrix.shape[0]
    for e in range(1, epochs + 1):
        row = {"epoch": e}
        if matrix is not None:
            row.update(gwa.summarize(matrix[e - 1][np.isfinite(matrix[e - 1])]).metrics())
        row.update(metrics[e - 1] if metrics is not None else {})
        writer.log_epoch(row, None if matrix is None else {"alignment": matrix[e - 1]})
    if summary is not None:
        writer.write_summary(summary)
    if complete:
        writer.finish()
    return path


@pytest.fixture
def simulate_run():
    """The realistic-run writer, :func:`_simulate_run`."""
    return _simulate_run


@pytest.fixture
def write_run():
    """The hand-built-run writer, :func:`_write_run`."""
    return _write_run
