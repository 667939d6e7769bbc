"""``gwa flag`` end to end on tiny run directories: it chooses ``pair_aware`` under class-pair noise, ``window``
otherwise, and says which and why (a printed line, the CSV's ``rule`` column, ``FlagResult.rule_reason``)."""

from __future__ import annotations

import csv

import numpy as np

from gwa import class_evidence
from gwa.policy import estimate_noise_map
from gwa.report import flag_samples
from gwa.rundir import RunWriter

C, PER_CLASS = 4, 40
GWA = (0.9, 0.2, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2)  # 10 epochs; the window is epochs 2-3


def write_pair_run(path, *, swapped: bool, with_map: bool = True):
    """Classes 0 and 2 hold 10 flipped labels each (5 with a window mean of -0.15, 5 of +0.05), predicted as
    classes 1 and 3 over the window when ``swapped``, else spread over the other classes; memorised after it.
    ``summary.json``'s ``noise_estimate`` is the map of epoch 2's evidence."""
    y = np.repeat(np.arange(C), PER_CLASS)
    align = np.full((len(GWA), y.size), 0.3)
    align[:3], align[0] = 0.2, 0.0
    pred = np.tile(y, (len(GWA), 1))
    noisy = np.zeros(y.size, dtype=bool)
    for given, true in ((0, 1), (2, 3)):
        flips = given * PER_CLASS + 30 + np.arange(10)
        noisy[flips] = True
        align[1, flips], align[2, flips] = -0.15, np.repeat([-0.15, 0.25], 5)
        others = [k for k in range(C) if k != given]
        pred[1:3, flips] = true if swapped else np.resize(others, 10)
    writer = RunWriter(
        path, {"dataset": "hand-built", "epochs": len(GWA)}, y.size, labels=y, noise_mask=noisy
    )
    for e, g in enumerate(GWA, 1):
        writer.log_epoch(
            {"epoch": e, "gwa": g, "train_acc": 0.9}, {"alignment": align[e - 1], "pred": pred[e - 1]}
        )
    if with_map:
        nm = estimate_noise_map(class_evidence(align[1], y, pred[1], C))
        writer.write_summary({"noise_estimate": nm.to_dict()})
    writer.finish()
    return path


def test_flag_chooses_pair_aware_under_swapped_pairs_and_says_why(tmp_path, commands, capsys):
    run = write_pair_run(tmp_path / "pairs", swapped=True)
    assert commands(["flag", str(run)]) == 0
    printed = capsys.readouterr().out
    assert (
        "flag rule: pair_aware (the run's noise map reports swapped class pairs (given->likely true: "
        "0->1 25%, 2->3 25%))" in printed
    )
    assert "flagged 20 of 160 samples" in printed and "precision 1.000, recall 1.000" in printed
    with open(run / "flagged.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["rule"] for r in rows} == {"pair_aware"}
    flagged = sorted(int(r["sample_id"]) for r in rows if r["flagged"] == "1")
    assert flagged == [*range(30, 40), *range(110, 120)]
    # The cleanlab-compatible export carries the chosen rule's flags (no source index: the run's own ids).
    assert np.flatnonzero(np.load(run / "label_issues.npy")).tolist() == flagged
    # --rule still forces a rule: window misses the 10 flipped samples with a positive window mean.
    forced = flag_samples(run, rule="window")
    assert forced.rule == "window" and forced.rule_reason == "chosen by the caller"
    assert sorted(forced.flagged_ids.tolist()) == [*range(30, 35), *range(110, 115)]
    assert forced.recall == 0.5


def test_flag_keeps_window_without_swapped_pairs(tmp_path, commands, capsys):
    run = write_pair_run(tmp_path / "spread", swapped=False)
    assert commands(["flag", str(run)]) == 0
    printed = capsys.readouterr().out
    # 4 of class 0's 10 flips land in one class: 10% >= the 8% of a pair, but not twice the class's even share
    # (25% / 3 classes): spread noise names no pair (gwa.policy PAIR_STANDOUT)
    assert "flag rule: window (the run's noise map names no swapped class pair)" in printed
    assert "flagged 10 of 160 samples" in printed
    res = flag_samples(run)
    assert res.rule == "window" and sorted(res.flagged_ids.tolist()) == [*range(30, 35), *range(110, 115)]


def test_flag_without_per_class_evidence_keeps_window(tmp_path):
    res = flag_samples(write_pair_run(tmp_path / "nomap", swapped=True, with_map=False))
    assert res.rule == "window" and res.rule_reason == "the run has no per-class evidence (no noise map)"
    forced = flag_samples(tmp_path / "nomap", rule="pair_aware")  # nothing to read: the same flags as window
    assert forced.description.endswith("no usable noise map: the same as window")
    np.testing.assert_array_equal(forced.flagged_ids, res.flagged_ids)
