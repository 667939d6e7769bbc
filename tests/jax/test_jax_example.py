"""examples/flax_loop.py runs, prints one line per epoch, and its streamed moments match its per-sample scores."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

for _name in ("jax", "flax", "optax", "sklearn"):  # what the example imports
    pytest.importorskip(_name)

import gwa

EXAMPLE = Path(__file__).parents[2] / "examples" / "flax_loop.py"


@pytest.fixture(scope="module")
def flax_loop():
    spec = importlib.util.spec_from_file_location("gwa_example_flax_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # linen modules are dataclasses: their module must be importable
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow  # examples/flax_loop.py, two epochs
def test_flax_loop_two_epochs(flax_loop, capsys):
    summaries, last_scores = flax_loop.main(["--epochs", "2", "--noise", "0.2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["epoch", "loss", "test_acc", "align", "gwa", "paper"]
    assert [line.split()[0] for line in out[1:3]] == ["1", "2"]
    for line, s in zip(out[1:3], summaries):  # the default value and the paper's, as printed
        assert float(line.split()[4]) == pytest.approx(s.gwa, abs=5e-5)
        assert float(line.split()[5]) == pytest.approx(s.gwa_paper, abs=5e-5)
    pick = re.fullmatch(
        r"gwa picks epoch (\d+) \(test acc [\d.]+\); the best test acc was [\d.]+ at epoch \d", out[3]
    )
    assert pick and int(pick.group(1)) == gwa.select_epoch(summaries, total_epochs=2)
    assert "finds the flipped labels with AUROC" in out[-1]
    assert len(summaries) == 2
    # Every training sample is scored exactly once per epoch: the streamed device moments must equal the
    # summary of the per-sample-id score array, the other path out of the same train step.
    assert not np.isnan(last_scores).any()
    assert summaries[-1].n == len(last_scores) == 1437
    direct = gwa.summarize(last_scores.astype(np.float64))
    np.testing.assert_allclose(
        [summaries[-1].mean, summaries[-1].excess_kurtosis, summaries[-1].gwa],
        [direct.mean, direct.excess_kurtosis, direct.gwa],
        rtol=1e-5,
    )


def test_flip_labels_flips_exactly_the_masked_ones(flax_loop):
    labels = np.arange(1000) % 10
    noisy, flipped = flax_loop.flip_labels(labels, 0.3, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(noisy != labels, flipped)
    assert 0.25 < flipped.mean() < 0.35 and noisy.min() >= 0 and noisy.max() <= 9


@pytest.mark.slow  # examples/flax_loop.py until it stops
def test_flax_loop_stops_with_the_core_stopper(flax_loop, capsys):
    summaries, _ = flax_loop.main(["--epochs", "40", "--patience", "1", "--noise", "0.4", "--lr", "3e-3"])
    out = capsys.readouterr().out
    replay = gwa.EarlyStopper(patience=1, total_epochs=40)  # warm-up: epochs 1-4
    stops = [replay.step(s) for s in summaries]
    assert stops[-1] and not any(stops[:-1]) and len(summaries) < 40
    assert f"stop at epoch {len(summaries)}: no new best for 1 epochs since epoch {replay.best_epoch}" in out
    assert f"gwa picks epoch {replay.best_epoch} " in out and replay.best_epoch > 4
