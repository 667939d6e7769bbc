"""Run directories of format 1 (gwa 0.1): read with their rows upgraded, reported and flagged; never resumed.

Format 1 logged the paper's verbatim value as ``gwa`` with ``gwa_flagged`` and a prose ``gwa_guard``; format 2
logs gwa's default value as ``gwa`` and the paper's as ``gwa_paper`` (``gwa_paper_flagged``, the guard's code in
``gwa_guard``, its sentence in ``gwa_guard_message``). The runs here are written by hand, file by file, as gwa 0.1
wrote them: no code of this gwa's writer is involved.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import gwa
from gwa.policy import flag_scores
from gwa.report import _analysis as A
from gwa.report import flag_samples
from gwa.rundir import FORMAT, RunDirError, RunWriter, load_run, read_metrics, upgrade_row

N, EPOCHS = 40, 10
POLE_EPOCHS = [
    3,
    4,
]  # two equal point masses: excess kurtosis -2, the paper's denominator -0.8, its value -0.5
CONSTANT_EPOCH = 6  # every score equal: kurtosis undefined
NEAR_POLE_EPOCH = (
    8  # near-uniform scores: excess kurtosis -1.155, the paper's value 6.7 (guarded), its argmax
)


def _scores(epoch: int, rng) -> np.ndarray:
    noisy = np.arange(N) < 10  # samples 0-9 are mislabeled: they drift negative
    if epoch in POLE_EPOCHS:
        return np.where(np.arange(N) % 2 == 0, -0.1, 0.9)
    if epoch == NEAR_POLE_EPOCH:
        return np.r_[np.linspace(-0.2, 0.8, N - 1), 0.3]
    if epoch == CONSTANT_EPOCH:
        return np.full(N, 0.2)
    mu = np.where(noisy, 0.05 - 0.06 * epoch, 0.1 + 0.03 * epoch)
    return np.clip(mu + rng.normal(0, 0.05, N), -1, 1)


def _old_row(epoch: int, s: gwa.EpochSummary, test_acc: float) -> dict:
    """A metrics row as gwa 0.1 wrote it (its ``epoch_metrics``: the paper's value under ``gwa``)."""

    def finite(v):
        return v if math.isfinite(v) else None

    return {
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 1.0 / epoch,
        "align_mean": finite(s.mean),
        "align_std": finite(s.std),
        "align_excess_kurtosis": finite(s.excess_kurtosis),
        "gwa": finite(s.gwa_paper),
        "gwa_flagged": s.flagged,
        "gwa_guard": None if s.guard is None else s.guard.message,
        "n_scores": s.n,
        "n_undefined": s.n_undefined,
        "test_acc": test_acc,
    }


def write_format1_run(path, *, summary: bool = True) -> dict:
    """Write a complete format-1 run directory by hand; return what was written (summaries, matrix, rows)."""
    rng = np.random.default_rng(7)
    (path / "scores").mkdir(parents=True)
    config = {
        "format": 1,
        "gwa_version": "0.1.0",
        "status": "complete",
        "num_samples": N,
        "name": "old",
        "dataset": "digits",
        "model": "mlp",
        "noise": "symmetric",
        "noise_rate": 0.25,
        "epochs": EPOCHS,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    noise_mask = np.arange(N) < 10
    np.save(path / "labels.npy", np.arange(N, dtype=np.int64) % 10)
    np.save(path / "noise_mask.npy", noise_mask)
    summaries, rows, matrix = [], [], []
    for e in range(1, EPOCHS + 1):
        scores = _scores(e, rng)
        s = gwa.summarize(scores)
        test_acc = 0.5 + 0.04 * e - 0.01 * max(0, e - 6) ** 2
        summaries.append(s)
        rows.append(_old_row(e, s, test_acc))
        matrix.append(scores)
        np.save(path / "scores" / f"alignment_{e:04d}.npy", scores.astype(np.float32))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        best = gwa.select_epoch(summaries, total_epochs=EPOCHS)
        (path / "summary.json").write_text(
            json.dumps(
                {
                    "format": 1,
                    "default": "gwa",
                    "criteria": {
                        "gwa": {"epoch": best, "test_acc": rows[best - 1]["test_acc"]},
                        "last": {"epoch": EPOCHS, "test_acc": rows[-1]["test_acc"]},
                    },
                }
            )
        )
    return {"summaries": summaries, "rows": rows, "matrix": np.array(matrix), "noise_mask": noise_mask}


@pytest.fixture
def old_run(tmp_path):
    path = tmp_path / "old"
    written = write_format1_run(path)
    return path, written


def test_the_fixture_is_a_format1_run_with_the_old_keys(old_run):
    path, _ = old_run
    assert json.loads((path / "config.json").read_text())["format"] == 1 != FORMAT
    raw = read_metrics(path)  # the file as written, not upgraded
    assert "gwa_paper" not in raw[0] and "gwa_flagged" in raw[0]
    assert raw[POLE_EPOCHS[0] - 1]["gwa"] == pytest.approx(-0.5)  # the paper's value at the pole
    assert raw[POLE_EPOCHS[0] - 1]["gwa_guard"].startswith("kurtosis pole: excess kurtosis -2")
    assert raw[CONSTANT_EPOCH - 1]["gwa_guard"] == "constant scores: kurtosis undefined"


def test_load_run_upgrades_the_rows(old_run):
    path, written = old_run
    run = load_run(path)
    assert run.config["format"] == 1 and run.complete and run.epochs == list(range(1, EPOCHS + 1))
    for row, s in zip(run.metrics, written["summaries"], strict=True):
        # Exactly the row this gwa would have written for the same scores (plus the trainer's own keys).
        expected = s.metrics()
        for key, value in expected.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-12), key
            else:
                assert row[key] == value, key
        assert "gwa_flagged" not in row
        assert row["step"] == 10 * row["epoch"] and row["train_loss"] == pytest.approx(1.0 / row["epoch"])
    pole = run.metrics[POLE_EPOCHS[0] - 1]
    assert pole["gwa_paper"] == pytest.approx(-0.5) and pole["gwa_paper_flagged"] is True
    assert pole["gwa_guard"] == "kurtosis_pole" and pole["gwa_guard_message"].startswith("kurtosis pole:")
    assert pole["gwa"] == pytest.approx(0.4 / (-2.0 + 3.0))  # recomputed: mean / (excess kurtosis + 3)
    constant = run.metrics[CONSTANT_EPOCH - 1]
    assert (
        constant["gwa_guard"] == "constant_scores"
        and constant["gwa"] is None
        and constant["gwa_paper"] is None
    )
    plain = run.metrics[0]
    assert (
        plain["gwa_guard"] is None
        and plain["gwa_guard_message"] is None
        and plain["gwa_paper_flagged"] is False
    )
    assert plain["gwa"] == pytest.approx(plain["align_mean"] / (plain["align_excess_kurtosis"] + 3.0))
    np.testing.assert_array_equal(
        run.series("gwa_paper"),
        [np.nan if s.gwa_paper is None else s.gwa_paper for s in written["summaries"]],
    )


def test_upgrade_row_maps_every_old_guard_and_leaves_format2_rows_alone():
    old = {
        "epoch": 1,
        "align_mean": None,
        "align_excess_kurtosis": None,
        "gwa": None,
        "gwa_flagged": True,
        "gwa_guard": "no scores",
    }
    new = upgrade_row(old, 1)
    assert new["gwa_guard"] == "no_scores" and new["gwa_guard_message"] == "no scores"
    assert new["gwa"] is None and new["gwa_paper"] is None and new["gwa_paper_flagged"] is True
    assert old["gwa_guard"] == "no scores" and "gwa_paper" not in old  # the input is not changed
    pole = upgrade_row(
        {
            "epoch": 2,
            "align_mean": 0.3,
            "align_excess_kurtosis": -1.5,
            "gwa": -1.0,
            "gwa_flagged": True,
            "gwa_guard": "kurtosis pole: excess kurtosis -1.5 + beta 1.2 = -0.3",
        },
        1,
    )
    assert (
        pole["gwa_guard"] == "kurtosis_pole"
        and pole["gwa_paper"] == -1.0
        and pole["gwa"] == pytest.approx(0.2)
    )
    current = gwa.summarize(np.r_[np.full(5, 0.9), np.full(5, -0.1)]).metrics()
    assert upgrade_row({"epoch": 1, **current}, 2) == {"epoch": 1, **current}
    assert upgrade_row({"epoch": 1, **current}, 1) == {"epoch": 1, **current}  # already upgraded: kept


def test_choices_recomputed_on_a_format1_run_use_the_upgraded_values(tmp_path):
    written = write_format1_run(tmp_path / "old", summary=False)
    run = load_run(tmp_path / "old")
    choices = A.chosen_epochs(run)
    assert {c.source for c in choices.values()} == {"recomputed"}
    assert choices["gwa"].epoch == gwa.select_epoch(written["summaries"], total_epochs=EPOCHS)
    assert choices["gwa_paper"].epoch == gwa.select_epoch(
        written["summaries"], "gwa_paper", total_epochs=EPOCHS
    )
    # The old rows' `gwa` (the paper's value) is ranked as gwa_paper, which takes its near-pole maximum; the
    # default criterion ranks the recomputed default value and does not.
    assert choices["gwa_paper"].epoch == NEAR_POLE_EPOCH != choices["gwa"].epoch
    assert choices["last"].epoch == EPOCHS


def test_gwa_report_on_a_format1_run(old_run, tmp_path, commands, capsys):
    path, written = old_run
    out = tmp_path / "report"
    assert commands(["report", str(path), "--out", str(out)]) == 0
    assert f"report written to {out / 'report.html'}" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    for section in ("config", "summary", "curves", "distribution", "datamap", "negative"):
        assert f'id="{section}"' in html or f"id='{section}'" in html
    # The guard names the pole epochs and the constant one, from the upgraded codes and messages.
    assert "not trusted at epoch(s) 3–4, 6, 8 (4 of 10)" in html
    assert "kurtosis pole at 3–4, 8; constant scores at 6" in html
    # The summary row of the default criterion shows the recomputed default value and the paper's value.
    from gwa.report._html import fmt

    best = written["rows"][json.loads((path / "summary.json").read_text())["criteria"]["gwa"]["epoch"] - 1]
    s = written["summaries"][best["epoch"] - 1]
    assert f"<td>{fmt(s.gwa)}</td><td>{fmt(s.gwa_paper)}</td>" in html.replace(
        "<td class='num'>", "<td>"
    ).replace('<td class="num">', "<td>")


def test_gwa_flag_on_a_format1_run(old_run, tmp_path, commands, capsys):
    path, written = old_run
    out = tmp_path / "flagged.csv"
    assert commands(["flag", str(path), "--rule", "lastk", "--out", str(out)]) == 0
    assert f"ranking written to {out}" in capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    _, decision, _ = flag_scores(written["matrix"], rule="lastk")
    flagged_ids = {int(r["sample_id"]) for r in rows if r["flagged"] == "1"}
    # Negative in each of the last 3 epochs: mislabeled samples 0-7 (8 and 9 are positive at epoch 8's linspace).
    assert flagged_ids == set(np.flatnonzero(decision).tolist()) == set(range(8))
    assert all(r["is_noisy"] == ("1" if int(r["sample_id"]) < 10 else "0") for r in rows)
    res = flag_samples(path, rule="lastk")
    assert res.precision == 1.0 and res.recall == pytest.approx(0.8)
    # the default rule reads a format-1 run's rows too: the same decision as the core policy on them
    res = flag_samples(path)
    _, decision, _ = flag_scores(written["matrix"], history=load_run(path).metrics)
    assert res.rule == "window" and set(res.flagged_ids.tolist()) == set(np.flatnonzero(decision).tolist())
    assert res.flagged.any()


def test_resuming_a_format1_run_is_refused(old_run):
    path, _ = old_run
    before = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}
    with pytest.raises(
        RunDirError,
        match=r"Cannot resume .*old: it is a run of format 1 \(an older gwa\); this gwa "
        r"writes format 2\. Start a new run\.",
    ):
        RunWriter(path, {"name": "old"}, N, resume=True, resume_epoch=5)
    after = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}
    assert after == before  # nothing truncated or rewritten
    assert len(list((path / "scores").glob("*.npy"))) == EPOCHS
