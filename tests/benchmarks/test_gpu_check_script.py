"""benchmarks/gpu_check.py: its CPU-reference logic and a dry run at tiny size on the CPU (no GPU needed)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

import torch
from gwa.torch import GWATracker
from torch import nn

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("defer", [None, 0])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reference_check_agrees_and_can_fail(gpu_check, precision, defer, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    tracker = GWATracker(model, num_samples=8, **({} if defer is None else {"defer": defer}))
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    assert gpu_check.reference_check(model, tracker, x, y, torch.arange(8), precision) < 1e-6
    if tracker.defer:  # the default: the scores come from end_epoch
        end_epoch = tracker.end_epoch

        def wrong_end_epoch():
            result = end_epoch()
            return dataclasses.replace(result, scores=result.scores + 0.1)

        monkeypatch.setattr(tracker, "end_epoch", wrong_end_epoch)  # a wrong score is caught
    else:
        tracker.end_epoch()
        update = tracker.update
        monkeypatch.setattr(
            tracker, "update", lambda *a, **k: update(*a, **k) + 0.1
        )  # a wrong score is caught
    assert gpu_check.reference_check(model, tracker, x, y, torch.arange(8), precision) > 0.09


@pytest.mark.slow  # the whole GPU check script on the CPU
def test_dry_run_on_the_cpu(gpu_check, capsys):
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "| resnet18 | fp32 |" in out
        and "gwa (`defer=0`)" in out
        and "| convnext_atto | bf16 |" in out
        and "all checks passed" in out
    )
