"""Loggers from a plain loop: ``RunRecorder(loggers=...)`` writes gwa's values to TensorBoard and W&B (offline), read
back from the event file and the offline run; and the diagnostics of the choice are raised, once each."""

from __future__ import annotations

import json
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torch
from gwa.integrations import RECOMMENDED_SIGNALS, RunRecorder, WithIndex
from gwa.integrations.loggers import TensorBoardLogger, WandbLogger, check_loggers
from gwa.torch import GWATracker

EPOCHS, N = 10, 96  # 10 epochs: a warm-up of one


def _loop(run_dir, loggers, *, epochs=EPOCHS):
    """A plain loop on 8x8 images (a few labels flipped) through RunRecorder; returns the recorder."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % 4
    x = torch.randn(N, 64, generator=g) * 0.5
    x[:, :4] += y[:, None].float()
    y[:6] = (y[:6] + 1) % 4
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=16, shuffle=True, generator=g)
    tracker = GWATracker(model, num_samples=N, signals=RECOMMENDED_SIGNALS)
    with RunRecorder(run_dir, tracker, total_epochs=epochs, loggers=loggers) as recorder:
        for epoch in range(1, epochs + 1):
            for xb, yb, ids in loader:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                recorder.update(logits, yb, ids)
            # step=: 6 optimizer steps per epoch, so the warm-up is far below 50 steps: `short_warmup` fires
            recorder.end_epoch(tracker.end_epoch(), step=6 * epoch)
    return recorder


@pytest.mark.slow
def test_tensorboard_event_file_holds_gwa_the_choice_and_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.warns(RuntimeWarning, match="short_warmup"):
        recorder = _loop(tmp_path / "run", TensorBoardLogger(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    gwa_events = events.Scalars("gwa")
    assert [e.step for e in gwa_events] == list(range(1, EPOCHS + 1))
    # The warm-up epoch is logged as NaN (never chosen); the others are the run directory's values.
    assert np.isnan(gwa_events[0].value)
    np.testing.assert_allclose(
        [e.value for e in gwa_events[1:]], [r["gwa"] for r in recorder.rows[1:]], rtol=1e-6
    )
    np.testing.assert_allclose(
        [e.value for e in events.Scalars("align_mean")],
        [r["align_mean"] for r in recorder.rows],
        rtol=1e-6,
    )
    # best_epoch: summary.json's name, each epoch (the best so far), then the choice at the last epoch's step.
    best = events.Scalars("best_epoch")
    assert [e.step for e in best] == [*range(1, EPOCHS + 1), EPOCHS]
    assert best[-1].value == best[-2].value == recorder.best_epoch
    assert [e.value for e in events.Scalars("gwa/stop")] == [0.0] * EPOCHS
    hists = events.Histograms("gwa/alignment")
    assert [h.step for h in hists] == list(range(1, EPOCHS + 1))
    assert all(h.histogram_value.num == N for h in hists)  # every sample, each epoch
    scores = recorder.tracker.history  # EpochSummary per epoch
    assert hists[-1].histogram_value.sum == pytest.approx(scores[-1].mean * N, rel=1e-5)
    text = events.Tensors("gwa/diagnostics/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "short_warmup" in text
    # The noise map of summary.json: its line as text; its rate as a scalar only when the map does not abstain.
    estimate = json.loads((tmp_path / "run" / "summary.json").read_text())["noise_estimate"]
    text = events.Tensors("gwa/noise_map/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == estimate["description"] and text.startswith("noise map:")
    rates = [e.value for e in events.Scalars("gwa/noise_rate")] if estimate["reliable"] else []
    assert rates == ([pytest.approx(estimate["rate"], rel=1e-6)] if estimate["reliable"] else [])


def _wandb_records(path: Path):
    """The records of an offline ``.wandb`` file (LevelDB log blocks of protobuf ``Record``s, after a 7-byte
    header), as wandb's own reader is not public."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _key(item) -> str:
    return "/".join(item.nested_key) or item.key


@pytest.mark.slow
def test_wandb_offline_run_holds_gwa_the_choice_and_histograms(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with pytest.warns(RuntimeWarning, match="short_warmup"):
        recorder = _loop(tmp_path / "run", WandbLogger(project="gwa-test"))
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb's service process may still be writing after run.finish() returns: wait for the run's exit record.
    deadline = time.monotonic() + 30
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(run_file)):
        assert time.monotonic() < deadline, "the offline run has no exit record after 30 s"
        time.sleep(0.2)
    history, summary = [], {}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        if kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(
        [h["gwa"] for h in history[1:]], [r["gwa"] for r in recorder.rows[1:]], rtol=1e-9
    )
    assert all(
        h["gwa/alignment/_type"] == "histogram" and sum(h["gwa/alignment/values"]) == N for h in history
    )
    assert summary["best_epoch"] == recorder.best_epoch
    assert any("short_warmup" in d for d in summary["gwa/diagnostics"])
    estimate = json.loads((tmp_path / "run" / "summary.json").read_text())["noise_estimate"]
    logged = summary.get("gwa/noise_map") or {
        k.removeprefix("gwa/noise_map/"): v for k, v in summary.items() if k.startswith("gwa/noise_map/")
    }
    assert logged["description"] == estimate["description"] and logged["reliable"] == estimate["reliable"]


def test_recorder_raises_each_diagnostic_once_and_keeps_them(tmp_path):
    class Memory:
        def __init__(self):
            self.epochs, self.choice, self.closed = [], None, False

        def log_epoch(self, epoch, values, alignment=None):
            self.epochs.append((epoch, dict(values), None if alignment is None else np.asarray(alignment)))

        def log_choice(self, best_epoch, diagnostics=()):
            self.choice = (best_epoch, list(diagnostics))

        def close(self):
            self.closed = True

    memory = Memory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorder = _loop(tmp_path / "run", [memory])
    gwa_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning) and "gwa:" in str(w.message)]
    codes = [d.code for d in recorder.diagnostics]
    assert "short_warmup" in codes
    assert [str(w.message) for w in gwa_warnings] == [f"gwa: {d}" for d in recorder.diagnostics]
    assert memory.closed and memory.choice == (recorder.best_epoch, recorder.diagnostics)
    assert [e for e, _, _ in memory.epochs] == list(range(1, EPOCHS + 1))
    assert all(a is not None and a.shape == (N,) for _, _, a in memory.epochs)
    assert memory.epochs[-1][1]["best_epoch"] == recorder.best_epoch


def test_loggers_are_checked():
    assert check_loggers(None) == []
    with pytest.raises(TypeError, match=r"Expected `loggers` .*got str without log_epoch, log_choice, close"):
        check_loggers(["tb"])
