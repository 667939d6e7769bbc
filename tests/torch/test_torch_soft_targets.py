"""GWATracker with label smoothing and one-hot probability rows (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gwa
from gwa.torch import GWATracker


def _confident_model(seed=0):
    """A head scaled so that the label margins of its own predictions reach tens of logits."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    with torch.no_grad():
        model[2].weight.mul_(40.0)
    return model


@pytest.mark.parametrize("defer", [0, 4])
def test_one_hot_rows_through_the_tracker_score_like_class_ids(defer):
    model = _confident_model()
    x = torch.randn(64, 8)
    results = {}
    for kind in ("ids", "rows"):
        tracker = GWATracker(model, num_samples=64, defer=defer)
        for i in range(0, 64, 16):
            logits = model(x[i : i + 16])
            y = logits.detach().argmax(1)  # confident and right: p_y rounds to 1 in float32
            targets = y if kind == "ids" else torch.nn.functional.one_hot(y, 5).float()
            tracker.update(logits, targets, sample_ids=torch.arange(i, i + 16))
        results[kind] = tracker.end_epoch().scores
        tracker.remove()
    margins = model(x).detach().sort(dim=1).values
    assert float((margins[:, -1] - margins[:, -2]).max()) > 20  # the regime where p - onehot cancels
    np.testing.assert_allclose(results["rows"], results["ids"], rtol=0, atol=1e-6)


def test_label_smoothing_is_recorded_and_class_ids_are_scored_against_the_hard_label():
    model = _confident_model(1)
    x, y = torch.randn(32, 8), torch.randint(0, 5, (32,))
    tracker = GWATracker(model, num_samples=32, label_smoothing=0.1, defer=0)
    logits = model(x)
    scores = tracker.update(logits, y, sample_ids=torch.arange(32))
    emb = model[1](model[0](x)).detach().double().numpy()
    expected = gwa.alignment(
        logits.detach().double().numpy(), y.numpy(), emb, model[2].weight.detach().double().numpy()
    )
    assert tracker.label_smoothing == 0.1
    np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True])
def test_label_smoothing_out_of_range_is_refused(bad):
    with pytest.raises(
        ValueError, match=r"Expected `label_smoothing` to be a finite number in \[0, 1\]; got"
    ):
        GWATracker(torch.nn.Linear(4, 3), label_smoothing=bad)
