"""A tracker state saved by gwa at commit 9db5a86 (before the tracker's split) resumes with today's code.

``tests/data/state_9db5a86.pt`` was written by ``tests/data/make_state_9db5a86.py`` with that commit's code: the model's
weights and the tracker's state mid-epoch, the batches that followed, the state after the first of them and the
epoch's result. Today's code must resume the state and give that result bit for bit, and write the same state.
"""

from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F

import torch
from gwa.torch import GWATracker
from torch import nn

SAVED = torch.load(Path(__file__).parents[1] / "data" / "state_9db5a86.pt", weights_only=True)
SETTINGS = {
    "default": {"num_samples": 40, "signals": ("loss", "margin", "pred")},
    "defer0_sparse": {"defer": 0},
}


def _resume(name: str):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as when the state was written: matmul results may depend on the thread count
    try:
        return _resume_on_one_thread(name)
    finally:
        torch.set_num_threads(threads)


def _resume_on_one_thread(name: str):
    saved = SAVED[name]
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 4)).double()
    model.load_state_dict(saved["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker = GWATracker(model, **SETTINGS[name])
    tracker.load_state_dict(saved["state"])
    states = []
    for ids in saved["batches"]:
        logits = model(saved["x"][ids])
        tracker.update(logits, saved["y"][ids], ids)
        opt.zero_grad()
        F.cross_entropy(logits, saved["y"][ids]).backward()
        opt.step()
        states.append(tracker.state_dict())
    return tracker, states


def _undefined_mask(undefined: torch.Tensor) -> torch.Tensor:
    """9db5a86 stored the captured norm for hard labels with ``defer=0`` (undefined where ``norm <= tiny``)."""
    return undefined if undefined.dtype == torch.bool else undefined <= torch.finfo(undefined.dtype).tiny


def _assert_same_state(got, expected, where="state"):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), where
        for key in expected:
            _assert_same_state(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), where
        if where.endswith("['chunks']"):
            for k, (g, e) in enumerate(zip(got, expected, strict=True)):
                g, e = list(g), list(e)
                g[3], e[3] = _undefined_mask(g[3]), _undefined_mask(e[3])
                _assert_same_state(g, e, f"{where}[{k}]")
            return
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            _assert_same_state(g, e, f"{where}[{k}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype, where
        assert torch.equal(got.isnan(), expected.isnan()) if got.is_floating_point() else True, where
        assert torch.equal(got.nan_to_num(), expected.nan_to_num()), where
    elif isinstance(expected, float) and expected != expected:
        assert got != got, where
    else:
        assert got == expected, where


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_state_saved_by_9db5a86_resumes_with_the_same_scores(name):
    saved = SAVED[name]
    tracker, _ = _resume(name)
    result = tracker.end_epoch()
    np.testing.assert_array_equal(result.scores, saved["scores"].numpy())
    if saved["sample_ids"] is None:
        assert result.sample_ids is None
    else:
        np.testing.assert_array_equal(result.sample_ids, saved["sample_ids"].numpy())
    assert sorted(result.signals) == sorted(saved["signals"])
    for key, values in saved["signals"].items():
        np.testing.assert_array_equal(result.signals[key], values.numpy())
    assert result.summary.mean == saved["mean"]
    assert result.summary.gwa == saved["gwa"]
    assert tracker.epoch == 2


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_resumed_tracker_writes_the_state_9db5a86_wrote(name):
    _, states = _resume(name)
    _assert_same_state(states[0], SAVED[name]["state_after_one"])
