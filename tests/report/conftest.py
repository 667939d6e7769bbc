"""Fixture run directories written with gwa.rundir.RunWriter, simulating a realistic noisy-label run."""

from __future__ import annotations

import numpy as np
import pytest

import gwa
from gwa.rundir import RunWriter
from gwa.rundir import epoch_metrics


def simulate_run(path, *, n=240, epochs=12, noise_frac=0.3, previews="image", complete=True, summary=True,
                 seed=0, config=None, quality=0.0):
    """Write a run directory: clean samples' alignment rises positive, flipped ones drift negative.

    Test accuracy rises, then falls (memorisation); ``quality`` shifts accuracy and mean alignment together
    (used to build runs with a known ranking). Returns the noise mask.
    """
    rng = np.random.default_rng(seed)
    noise = np.zeros(n, bool)
    noise[rng.choice(n, int(round(noise_frac * n)), replace=False)] = True
    clean_labels = rng.integers(0, 10, n)
    labels = np.where(noise, (clean_labels + rng.integers(1, 10, n)) % 10, clean_labels)
    cfg = {"name": path.name, "dataset": "digits", "model": "mlp", "noise": {"kind": "symmetric", "rate": noise_frac},
           "epochs": epochs, "seed": seed}
    writer = RunWriter(path, {**cfg, **(config or {})}, n, labels=labels, clean_labels=clean_labels,
                       noise_mask=noise)
    offset = rng.normal(0.0, 0.04, n)  # per-sample difficulty, constant over epochs
    gwa_values, test_accs = [], []
    for e in range(1, epochs + 1):
        rise = 1 - np.exp(-e / 3)
        mu = np.where(noise, 0.04 - 0.6 * (1 - np.exp(-e / 6)), 0.05 + 0.35 * rise + quality)
        scores = np.clip(mu + offset + rng.normal(0, 0.05, n), -1, 1)
        scores[rng.choice(n, 3, replace=False)] = np.nan  # a few samples unseen this epoch (drop_last)
        s = gwa.summarize(scores[np.isfinite(scores)])
        test_acc = 0.55 + 0.3 * rise - 0.025 * max(0, e - 7) + quality
        row = {"epoch": e, "step": e * 10, "lr": 0.1, "train_loss": 2.0 / e, "train_acc": min(1.0, 0.5 + 0.05 * e),
               **epoch_metrics(s), "val_acc": test_acc + rng.normal(0, 0.01), "test_acc": test_acc,
               "wall_time": 0.5 * e}
        writer.log_epoch(row, {"alignment": scores, "loss": -np.log(np.clip(0.5 + scores / 2, 1e-3, 1))})
        gwa_values.append(s.gwa_or_nan)
        test_accs.append(test_acc)
    if previews == "image":
        yy, xx = np.mgrid[0:8, 0:8]
        imgs = np.stack([np.sin(xx * (1 + i % 3) / 3.0) * np.cos(yy * (1 + i % 4) / 4.0) for i in range(n)])
        writer.write_previews(np.arange(n), imgs.astype(np.float32))
    elif previews == "signal":
        t = np.linspace(0, 1, 40)
        writer.write_previews(np.arange(n), np.stack([np.sin(2 * np.pi * (1 + i % 5) * t) for i in range(n)]))
    if summary:
        g = gwa.select_epoch(gwa_values) + 1
        o = int(np.argmax(test_accs)) + 1
        writer.write_summary({"criteria": {"gwa": {"epoch": g, "test_acc": test_accs[g - 1]},
                                           "oracle": {"epoch": o, "test_acc": test_accs[o - 1]},
                                           "last": {"epoch": epochs, "test_acc": test_accs[-1]}}})
    if complete:
        writer.finish()
    return noise


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    simulate_run(path)
    return path


@pytest.fixture
def commands(monkeypatch):
    """gwa.cli.main limited to this package's commands, so these tests do not depend on the trainer's imports."""
    import gwa.cli

    monkeypatch.setattr(gwa.cli, "COMMANDS", {k: gwa.cli.COMMANDS[k] for k in ("report", "flag", "compare")})
    return gwa.cli.main
