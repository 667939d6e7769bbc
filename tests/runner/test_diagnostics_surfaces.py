"""Every surface that makes a choice says when not to trust it, by :func:`gwa.policy.diagnose` alone: ``gwa train``'s
summary.json and printed summary and the callbacks' :class:`EpochMonitor` (the report: tests/report/test_report.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import warnings

import numpy as np
import pytest

import gwa
from gwa import policy

# The docstring example of gwa.policy.diagnose: the alignment peaks at epoch 3 while the model still fits 50%.
GWA_VALUES = [0.01, 0.05, 0.09, 0.06, 0.04, 0.03, 0.03, 0.03, 0.03, 0.03]
TRAIN_ACC = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
ACTION = "keep a small validation split for this run"


def _as_dicts(diagnostics) -> list[dict]:
    return [dataclasses.asdict(d) for d in diagnostics]


# ---------------------------------------------------------------------------------------------- the callbacks


def _results(means, spread, seed=0, n=200):
    torch_mod = pytest.importorskip("gwa.torch")
    rng = np.random.default_rng(seed)
    out = []
    for epoch, mean in enumerate(means, start=1):
        scores = np.clip(rng.normal(mean, spread, n), -1, 1).astype(np.float32)
        summary = gwa.summarize(scores.astype(np.float64))
        out.append(torch_mod.EpochResult(epoch=epoch, summary=summary, scores=scores))
    return out


@pytest.mark.parametrize(("spread", "codes"), [(0.005, ["early_transient"]), (0.1, None)])
def test_epoch_monitor_diagnoses_its_choice_and_writes_it(tmp_path, spread, codes):
    pytest.importorskip("torch")
    from gwa.integrations import EpochMonitor
    from gwa.rundir import load_run

    m = EpochMonitor(run_dir=tmp_path / "run")
    m.start(max_epochs=10, num_samples=200, write=True, framework="test")
    results = _results(GWA_VALUES, spread)
    for r, acc in zip(results, TRAIN_ACC, strict=True):
        m.end_epoch(r, extra={"train_acc": acc})
    assert m.diagnostics == []  # computed at the end of training
    m.finish()
    # The run directory's whole alignment history, as gwa train's summary and the report read it.
    history = np.stack([np.asarray(r.scores, np.float32) for r in results]).astype(np.float64)
    expected = policy.diagnose(m.rows, "gwa", alignment=history, total_epochs=10)
    assert m.diagnostics == expected
    if codes is not None:
        assert [d.code for d in expected] == codes
    else:  # a wide spread about a small mean: many negatively aligned samples, the noise check fires
        assert "label_noise" in [d.code for d in expected]
    assert load_run(tmp_path / "run").summary["diagnostics"] == json.loads(json.dumps(_as_dicts(expected)))


def test_epoch_monitor_without_run_dir_or_scores():
    pytest.importorskip("torch")
    from gwa.integrations import EpochMonitor

    m = EpochMonitor()
    m.start(max_epochs=10, num_samples=None, write=False, framework="test")
    for r, acc in zip(_results(GWA_VALUES, 0.1), TRAIN_ACC, strict=True):
        m.end_epoch(r, extra={"train_acc": acc}, per_sample=False)
    m.finish()
    assert m.diagnostics == policy.diagnose(m.rows, "gwa", total_epochs=10)  # no alignment: no noise check
    assert [d.code for d in m.diagnostics] == ["early_transient"]


def test_warn_diagnostics_one_runtime_warning_each():
    from gwa.integrations._epoch_values import warn_diagnostics

    found = policy.diagnose([{"gwa": g, "train_acc": a} for g, a in zip(GWA_VALUES, TRAIN_ACC, strict=True)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_diagnostics(found)
    assert [(w.category, str(w.message)) for w in caught] == [(RuntimeWarning, f"gwa: {found[0]}")]
    assert str(caught[0].message).startswith("gwa: [early_transient] ") and ACTION in str(caught[0].message)


# ---------------------------------------------------------------------------------------------- gwa train


def test_gwa_train_writes_and_prints_the_diagnostics_of_its_own_rows(tmp_path):
    pytest.importorskip("torch")
    from gwa.rundir import load_run
    from gwa.runner.config import RunConfig
    from gwa.runner.summary import print_summary
    from gwa.runner.train import run_training

    config = RunConfig(
        dataset="digits",
        num_train=240,
        model="mlp",
        hidden=(16,),
        batch_size=64,
        quiet=True,
        epochs=3,
        out=str(tmp_path / "run"),
    )
    out = run_training(config, progress=False)
    run = load_run(out)
    evidence = run.class_evidence()  # classes.jsonl: one record per epoch
    assert evidence is not None and len(evidence) == 3
    expected = policy.diagnose(
        run.metrics, "gwa", alignment=run.score_matrix("alignment"), total_epochs=3, evidence=evidence
    )
    stored = run.summary["diagnostics"]
    assert [(d["code"], d["message"], d["action"]) for d in stored] == [
        (d.code, d.message, d.action) for d in expected
    ]
    assert "short_warmup" in [d["code"] for d in stored]  # 3 epochs: no warm-up at all
    text = io.StringIO()
    print_summary(out, file=text)
    lines = text.getvalue().splitlines()
    for d in expected:
        assert f"  trust: {d}" in lines
    assert "no diagnostic fired" not in text.getvalue()


def test_print_summary_says_when_no_diagnostic_fired(tmp_path):
    from gwa.runner.summary import print_summary

    (tmp_path / "summary.json").write_text(
        json.dumps({"criteria": {"gwa": {"epoch": 4, "test_acc": 0.9}}, "diagnostics": []})
    )
    text = io.StringIO()
    print_summary(tmp_path, file=text)
    assert "  trust: no diagnostic fired\n" in text.getvalue()
    assert text.getvalue().index("gwa ") < text.getvalue().index("trust:")  # under the criteria
