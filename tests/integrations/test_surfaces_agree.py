"""Every surface writes one run directory through the one after-epoch path (:class:`gwa.integrations.EpochMonitor`):
``gwa train`` (torch and jax), ``RunRecorder``, the Lightning and Hugging Face callbacks and the Flax example each
write a ``summary.json`` with exactly the keys of :class:`gwa.rundir.RunSummary` (read raw, not upgraded), their
metric rows carry the logged values under the same names, and each surface's chosen epoch is
:func:`gwa.policy.select_epoch` on its own metrics history."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gwa import policy
from gwa.integrations import LOG_KEYS
from gwa.rundir import SUMMARY_FORMAT, SUMMARY_KEYS, load_run

EPOCHS = 5


def _gwa_train(out: Path, backend: str) -> int | None:
    from gwa.runner.config import RunConfig
    from gwa.runner.train import run_training

    config = RunConfig(
        dataset="digits",
        num_train=240,
        model="mlp",
        hidden=(16,),
        batch_size=64,
        epochs=EPOCHS,
        noise="symmetric",
        noise_rate=0.2,
        backend=backend,
        quiet=True,
        out=str(out),
    )
    run_training(config, progress=False)
    return None  # gwa train keeps no object: its choice is summary.json's


def _run_recorder(out: Path) -> int | None:
    import _lightning_setup as S
    import torch.nn.functional as F

    import torch
    from gwa.integrations import RECOMMENDED_SIGNALS, RunRecorder
    from gwa.torch import GWATracker

    net = S.make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tracker = GWATracker(net, num_samples=S.N, signals=RECOMMENDED_SIGNALS)
    with RunRecorder(out, tracker, total_epochs=EPOCHS) as recorder:
        for _ in range(EPOCHS):
            for x, y, ids in S.loader(16):
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                recorder.update(logits, y, ids, inputs=x)
                opt.step()
            recorder.end_epoch(tracker.end_epoch())
    return recorder.best_epoch


def _lightning(out: Path) -> int | None:
    pytest.importorskip("lightning")
    import _lightning_setup as S

    from gwa.integrations.lightning import GWACallback

    callback = GWACallback(run_dir=out)
    S.trainer(EPOCHS, [callback]).fit(S.Module(), S.loader(16))
    assert callback.summary is not None and callback.summary["best_epoch"] == callback.best_epoch
    return callback.best_epoch


def _hugging_face(out: Path) -> int | None:
    pytest.importorskip("transformers")
    import test_huggingface as H

    from gwa.integrations.huggingface import GWATrainerCallback

    callback = GWATrainerCallback(run_dir=out)
    H.train(callback, out.parent / "hf-output", epochs=EPOCHS)
    assert callback.summary is not None and callback.summary["best_epoch"] == callback.best_epoch
    return callback.best_epoch


def _flax_example(out: Path) -> int | None:
    for name in ("jax", "flax", "optax", "sklearn"):
        pytest.importorskip(name)
    path = Path(__file__).parents[2] / "examples" / "flax_loop.py"
    spec = importlib.util.spec_from_file_location("gwa_example_flax_loop_surfaces", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # linen modules are dataclasses: their module must be importable
    try:
        spec.loader.exec_module(module)
        module.main(["--epochs", str(EPOCHS), "--out", str(out)])
    finally:
        sys.modules.pop(spec.name, None)
    return None


SURFACES = {
    "gwa train (torch)": lambda out: _gwa_train(out, "torch"),
    "gwa train (jax)": lambda out: (pytest.importorskip("flax"), _gwa_train(out, "jax"))[1],
    "RunRecorder": _run_recorder,
    "Lightning": _lightning,
    "Hugging Face": _hugging_face,
    "Flax example": _flax_example,
}


@pytest.mark.slow  # real trainers: gwa train, Lightning and Hugging Face fits, a jitted Flax loop
def test_every_surface_writes_one_summary_schema_and_chooses_the_cores_epoch(tmp_path, capsys):
    written = {}
    for name, fit in SURFACES.items():
        out = tmp_path / name.replace(" ", "_").replace("(", "").replace(")", "")
        try:
            own_best = fit(out)
        except pytest.skip.Exception:  # a framework not installed: the others still agree
            continue
        written[name] = (out, own_best)
    capsys.readouterr()
    assert {"gwa train (torch)", "RunRecorder"} <= set(written)

    for name, (out, own_best) in written.items():
        raw = json.loads((out / "summary.json").read_text())
        assert tuple(raw) == SUMMARY_KEYS, name  # written whole, in one order, by every surface
        assert raw["summary_format"] == SUMMARY_FORMAT
        run = load_run(out)
        assert run.complete and run.summary == raw, name
        summary = run.summary
        assert summary["epochs_run"] == len(run.metrics) == EPOCHS and summary["epochs_planned"] == EPOCHS
        # One name per metric: what the loggers receive is in every row under the same key.
        assert all(set(LOG_KEYS) <= set(row) for row in run.metrics), name
        # The chosen epoch is the core's, on this surface's own history.
        expected = policy.select_epoch(run.metrics, summary["monitor"], total_epochs=EPOCHS)
        assert summary["best_epoch"] == summary["criteria"][summary["monitor"]]["epoch"] == expected, name
        if own_best is not None:  # the surface's own object says the same
            assert own_best == expected, name
        assert summary["default"] == policy.DEFAULT_CRITERION and isinstance(summary["diagnostics"], list)

    # Fields only gwa train knows are present everywhere, and null where a surface cannot know them.
    train = load_run(written["gwa train (torch)"][0]).summary
    recorder = load_run(written["RunRecorder"][0]).summary
    assert train["realised_noise_rate"] == pytest.approx(
        float(np.mean(load_run(written["gwa train (torch)"][0]).noise_mask))
    )
    assert train["best_checkpoint"]["epoch"] == train["criteria"]["gwa"]["epoch"]
    assert recorder["realised_noise_rate"] is None and recorder["noise"] is None
    assert recorder["best_checkpoint"] is None and recorder["best_model_dir"] is None
