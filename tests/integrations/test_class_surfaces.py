"""Per-class evidence through EpochMonitor (the callbacks' and RunRecorder's path): classes.jsonl, the noise map in
summary.json, the diagnostics, the report's table, resume, and the tiny-split veto."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gwa
from gwa import policy
from gwa.integrations import EpochMonitor
from gwa.rundir import load_run
from gwa.torch import EpochResult

C, PER_CLASS, FLIPPED = 4, 100, 30
NAMES = ["cat", "dog", "car", "truck"]
GWA_MEANS = [0.02, 0.04, 0.06, 0.08, 0.07, 0.05]
#: Ten epochs: the shortest run whose noise map reads (a shorter one abstains, issue 18).
LONG_GWA_MEANS = [*GWA_MEANS, 0.04, 0.04, 0.03, 0.03]


def swapped_run(means=GWA_MEANS):
    """Epoch results with two swapped pairs: 30 of given label 0 are really 1, 30 of given 2 are really 3.

    A flipped sample is predicted as its true class and negatively aligned, mirroring a clean one (predicted as
    its label, positively aligned): so the noise map must read Q[0, 1] = Q[2, 3] = 30 / 100.
    """
    labels = np.repeat(np.arange(C), PER_CLASS)
    truth = labels.copy()
    truth[:FLIPPED] = 1
    truth[2 * PER_CLASS : 2 * PER_CLASS + FLIPPED] = 3
    out = []
    for epoch, shift in enumerate(means, start=1):
        scores = np.where(truth != labels, -0.9, 1.0).astype(np.float32) * (0.06 + shift)
        evidence = gwa.class_evidence(scores, labels, truth, C)
        summary = gwa.summarize(scores.astype(np.float64))
        out.append(
            EpochResult(
                epoch=epoch,
                summary=summary,
                scores=scores,
                predictions=truth,
                labels=labels,
                class_evidence=evidence,
            )
        )
    return out, labels, truth


@pytest.mark.slow  # the report's figures: about 7 s
def test_two_swapped_pairs_reach_summary_classes_jsonl_diagnostics_and_report(tmp_path):
    results, labels, _ = swapped_run(LONG_GWA_MEANS)
    m = EpochMonitor(run_dir=tmp_path / "run", run_config={"class_names": NAMES})
    m.start(max_epochs=len(results), num_samples=labels.size, write=True, framework="test")
    for result in results:
        m.end_epoch(result)
    m.finish()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    estimate = summary["noise_estimate"]
    assert estimate["pairs"] == [[0, 1, 0.3], [2, 3, 0.3]]
    assert estimate["rate"] == pytest.approx(0.15)  # 60 of 400 labels
    assert "cat -> dog (30%)" in estimate["description"] and "car -> truck (30%)" in estimate["description"]
    assert m.noise_map is not None and m.noise_map.pairs == ((0, 1, 0.3), (2, 3, 0.3))
    assert "class_conditional" in [d["code"] for d in summary["diagnostics"]]
    run = load_run(tmp_path / "run")
    assert [r["epoch"] for r in run.classes] == list(range(1, 11)) and not run.problems
    assert run.class_evidence() == [r.class_evidence for r in results]
    # The same map as the core's over the run's rows and records.
    expected = policy.noise_map_of_run(run.metrics, run.class_evidence(), total_epochs=len(results))
    assert estimate == {**expected.to_dict(), "description": expected.describe(NAMES)}
    from gwa.report import write_report

    html = write_report(tmp_path / "run").read_text()
    assert "which classes look swapped" in html
    table = html[html.index("<th>given label</th>") :]
    table = table[: table.index("</table>")]
    assert '<td>cat</td><td>dog</td><td class="num">30.0%</td>' in table
    assert '<td>car</td><td>truck</td><td class="num">30.0%</td>' in table
    assert (tmp_path / "run" / "report" / "classes.png").stat().st_size > 1000


def test_symmetric_noise_keeps_class_conditional_quiet(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), PER_CLASS)
    truth = labels.copy()
    flip = rng.random(labels.size) < 0.2
    truth[flip] = (labels[flip] + rng.integers(1, C, flip.sum())) % C  # spread over every other class
    m = EpochMonitor()
    m.start(max_epochs=len(LONG_GWA_MEANS), num_samples=labels.size, write=False, framework="test")
    for epoch, shift in enumerate(LONG_GWA_MEANS, start=1):
        scores = np.where(truth != labels, -0.9, 1.0) * (0.06 + shift)
        result = EpochResult(
            epoch=epoch,
            summary=gwa.summarize(scores),
            scores=scores.astype(np.float32),
            class_evidence=gwa.class_evidence(scores, labels, truth, C),
        )
        m.end_epoch(result)
    m.finish()
    assert "class_conditional" not in [d.code for d in m.diagnostics]
    assert (
        m.noise_map is not None
        and m.noise_map.reliable
        and m.noise_map.rate == pytest.approx(flip.mean(), abs=0.02)
    )


def test_resume_keeps_the_evidence_and_rewrites_classes_jsonl(tmp_path):
    results, labels, _ = swapped_run()
    first = EpochMonitor(run_dir=tmp_path / "run")
    first.start(max_epochs=6, num_samples=labels.size, write=True, framework="test")
    for result in results[:4]:
        first.end_epoch(result)
    state = first.state_dict()
    first.writer.close()
    again = EpochMonitor(run_dir=tmp_path / "run")
    again.load_state_dict(json.loads(json.dumps(state)))  # plain values only
    again.start(max_epochs=6, num_samples=labels.size, write=True, framework="test")
    for result in results[4:]:
        again.end_epoch(result)
    again.finish()
    run = load_run(tmp_path / "run")
    assert [r["epoch"] for r in run.classes] == list(range(1, 7))
    assert again.noise_map is not None and again.noise_map.pairs == ((0, 1, 0.3), (2, 3, 0.3))


def test_the_veto_keeps_the_candidates_epoch_with_the_best_split_accuracy(tmp_path):
    results, labels, _ = swapped_run()
    split = [0.50, 0.60, 0.70, 0.65, 0.90, 0.55]  # epoch 5: neither gwa's peak (4) nor the last
    m = EpochMonitor(veto=True, restore_best_weights=True)
    m.start(max_epochs=6, num_samples=labels.size, write=False, framework="test")
    states = []
    for result, acc in zip(results, split, strict=True):
        m.end_epoch(result, extra={"veto_acc": acc}, model_state=lambda e=result.epoch: {"w": _tensor(e)})
        states.append(m.best_epoch)
    rows = [{**r, "class_evidence": x.class_evidence.to_dict()} for r, x in zip(m.rows, results, strict=True)]
    epoch, _ = policy.choose_with_veto(rows, total_epochs=6)
    assert m.best_epoch == epoch
    assert m.stopper.criterion_best == gwa.select_epoch(m.rows, total_epochs=6)
    loaded = {}
    m.finish(loaded.update)
    assert float(loaded["w"]) == m.best_epoch  # the kept epoch's weights, whichever candidate chose it
    with pytest.raises(TypeError, match="Expected `veto` to be True, False or a callable"):
        EpochMonitor(veto="yes")


def _tensor(value):
    import torch

    return torch.tensor(float(value))


def test_run_recorder_passes_the_split_accuracy_to_the_veto(tmp_path):
    import torch
    from gwa.integrations import RunRecorder
    from gwa.torch import GWATracker

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(48, 5), torch.randint(0, 3, (48,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = GWATracker(model, num_samples=48)
    split = [0.3, 0.5, 0.9, 0.6, 0.4]
    with RunRecorder(tmp_path / "run", tracker, total_epochs=5, veto=True, previews=False) as recorder:
        for acc in split:
            for ids in torch.arange(48).split(16):
                loss = torch.nn.functional.cross_entropy(logits := model(x[ids]), y[ids])
                optimizer.zero_grad()
                loss.backward()
                recorder.update(logits, y[ids], ids)
                optimizer.step()
            recorder.end_epoch(tracker.end_epoch(), veto_acc=acc)
    run = load_run(tmp_path / "run")
    assert [r["veto_acc"] for r in run.metrics] == split and len(run.classes) == 5
    rows = [{**r, "class_evidence": e} for r, e in zip(run.metrics, run.class_evidence(), strict=True)]
    assert recorder.best_epoch == policy.choose_with_veto(rows, total_epochs=5)[0]
    assert run.summary["best_epoch"] == recorder.best_epoch and "noise_estimate" in run.summary
