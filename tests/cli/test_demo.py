import re
import socket

import numpy as np
import pytest

pytest.importorskip("torch")

import gwa
from gwa import cli, policy
from gwa.rundir import load_run


@pytest.mark.slow  # `gwa demo --quick` end to end
def test_quick_demo_runs_offline_and_prints_the_table(tmp_path, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    run = load_run(out)
    assert run.complete and run.config["dataset"] == "mnist1d" and run.config["noise"] == "symmetric"
    # 20% of the 800 generated training samples (before the 10% validation hold-out) are flipped.
    n_val = 80
    assert run.labels.size == 720 and run.noise_mask.sum() <= 160 and run.noise_mask.sum() > 100
    assert n_val + run.labels.size == 800
    for key, label in (
        ("gwa", "GWA (gwa's default rule)"),
        ("val", "validation split"),
        ("last", "last epoch"),
    ):
        info = run.summary["criteria"][key]
        match = re.search(re.escape(label) + r".*?\s+(\d+)\s+([\d.]+)%", text)
        assert match, text
        assert int(match.group(1)) == info["epoch"]
        assert float(match.group(2)) == pytest.approx(100 * info["test_acc"], abs=0.051)
    # Every stop rule's epoch is the core policy's choice over the logged rows (1-based, planned epochs' warm-up).
    assert {k: v["epoch"] for k, v in run.summary["criteria"].items()} == policy.select_all(
        run.metrics, total_epochs=run.config["epochs"]
    )
    assert run.summary["criteria"]["gwa"]["epoch"] == gwa.select_epoch(
        run.metrics, total_epochs=run.config["epochs"]
    )
    flagged = re.search(
        r"(\d+) of (\d+) training samples; against the (\d+) flipped labels: precision ([\d.]+|n/a), "
        r"recall ([\d.]+)",
        text,
    )
    assert flagged, text
    assert "flagged as likely mislabeled by rule window (mean alignment < 0 over epochs" in text
    # the core policy's default rule over the run's rows and scores (warm-up of the planned epochs)
    _, expected, _ = policy.flag_scores(
        run.score_matrix(), history=run.metrics, total_epochs=run.config["epochs"]
    )
    assert int(flagged.group(1)) == expected.sum() and int(flagged.group(3)) == run.noise_mask.sum()
    assert float(flagged.group(5)) == pytest.approx(
        (expected & run.noise_mask).sum() / run.noise_mask.sum(), abs=0.006
    )
    r = re.search(r"Pearson r = (-?[\d.]+)", text)
    assert r and float(r.group(1)) == pytest.approx(
        np.corrcoef(run.series("align_mean"), run.series("test_acc"))[0, 1], abs=0.006
    )
    # How far to trust the choice: gwa.policy.diagnose on the default criterion, one line each under the table.
    found = policy.diagnose(
        run.metrics,
        alignment=run.score_matrix(),
        total_epochs=run.config["epochs"],
        finetune=False,
        evidence=run.class_evidence(),
    )
    # The noise map of the run's per-class evidence, printed in one line above the trust lines.
    noise_map = policy.noise_map_of_run(run.metrics, run.class_evidence(), total_epochs=run.config["epochs"])
    assert f"  {noise_map.describe(run.config['class_names'])}" in text.splitlines()
    assert [(d["code"], d["message"]) for d in run.summary["diagnostics"]] == [
        (d.code, d.message) for d in found
    ]
    trust = [line for line in text.splitlines() if line.startswith("  trust: ")]
    assert trust == ([f"  trust: {d}" for d in found] or ["  trust: no diagnostic fired"])
    report = re.search(r"report: (\S+)", text).group(1)
    assert report.endswith("report.html") and (out / "report" / "report.html").exists()
    assert np.isfinite(run.series("test_acc")).all()


@pytest.mark.slow  # `gwa demo --quick` end to end, twice
def test_demo_replaces_its_own_run_but_not_other_directories(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert cli.main(["demo", "--quick", "--out", str(other), "-q", "--no-report"]) == 2
    assert "is not empty" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep me"
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "-q", "--no-report"]) == 0
    assert cli.main(["demo", "--quick", "--out", str(out), "-q", "--no-report", "--seed", "1"]) == 0
    assert load_run(out).config["seed"] == 1 and "gwa report" in capsys.readouterr().out
