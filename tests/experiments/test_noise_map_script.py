"""experiments/noise_map.py (issue 18's development analysis): its truth, pair scores, intervals and veto table on
hand-built runs with known answers, so that a mutation of the analysis fails here."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def nm():
    spec = importlib.util.spec_from_file_location("noise_map_bench", EXPERIMENTS / "noise_map.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["noise_map_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_truth_matrix_and_pair_scores(nm):
    clean = np.repeat(np.arange(10), 10)
    given = clean.copy()
    given[:3] = 1  # 3 of class 0 labelled 1: among the 13 given 1, 3 are truly 0
    t = nm.truth_matrix(given, clean)
    assert t[1, 0] == pytest.approx(3 / 13) and t.sum() == pytest.approx(3 / 13) and t[0, 0] == 0
    assert nm.pair_scores({(1, 0), (2, 3)}, t) == (1, 1, 0)
    assert nm.pair_scores(set(), t) == (0, 0, 1)


def test_seed_interval_is_a_t_interval_over_the_per_seed_values(nm):
    mean, lo, hi = nm.seed_interval({0: 1.0, 1: 2.0, 2: 6.0})
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 6], ddof=1) / np.sqrt(3)
    assert mean == 3.0 and lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert np.isnan(nm.seed_interval({0: 1.0})[1])


def _run(seed, noise, val_best, veto_best, epochs=6, n=200):
    """A raw run whose 10% split peaks at epoch ``val_best`` and whose 2% split (its first fifth) at ``veto_best``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    alignment = rng.uniform(0.02, 0.08, (epochs, n)).astype(np.float32)
    val_labels = rng.integers(0, 10, 50)
    val_pred = np.tile(val_labels, (epochs, 1))
    for e in range(epochs):
        val_pred[e, 10:] = (val_labels[10:] + (e + 1 != val_best)) % 10  # the 10% split is right only there
        val_pred[e, :10] = (val_labels[:10] + (e + 1 != veto_best)) % 10
    history = [{"gwa": 0.02 + 0.01 * (e == 2), "gwa_paper": 0.02, "align_mean": 0.05} for e in range(epochs)]
    return {
        "alignment": alignment,
        "pred": np.tile(labels, (epochs, 1)),
        "labels": labels,
        "clean_labels": labels,
        "val_pred": val_pred,
        "val_labels": val_labels,
        "val_clean": val_labels,
        "test_acc": np.array([0.70, 0.72, 0.75, 0.74, 0.80, 0.78]),
        "history": np.array(json.dumps(history)),
        "dataset": "fashion-mnist",
        "model": "mlp",
        "noise": noise,
        "rate": 0.2,
        "seed": seed,
        "name": f"fashion-mnist_mlp_{noise}20_s{seed}",
    }


def test_a_run_end_to_end(nm):
    out, crit = nm.analyse_run(_run(0, "symmetric", val_best=5, veto_best=6))
    chosen = {c["criterion"]: (c["epoch"], c["test_acc"]) for c in crit}
    assert chosen["val"] == (5, 0.80) and chosen["val2"] == (6, 0.78)
    assert chosen["gwa"] == (3, 0.75)  # gwa peaks at epoch 3
    # the veto chooses among gwa (3) and last (6) (the clean run has no class alarm): the 2% split prefers 6
    assert chosen["veto"] == (6, 0.78)
    assert out["true_rate"] == 0 and out["default_lost_to_split"] == pytest.approx(0.05) and out["loses"] == 1
    assert out["class_conditional"] == 0


def test_the_veto_table_is_paired_per_run(nm):
    runs, crit = [], []
    for seed in range(3):
        r, c = nm.analyse_run(_run(seed, "symmetric", val_best=5, veto_best=6))
        runs.append(r)
        crit.extend(c)
    text = nm.tables(runs, crit)
    row = next(line for line in text.splitlines() if line.startswith("| fashion-mnist mlp | symmetric | 3 |"))
    # veto 0.78 vs the 10% split's 0.80, vs the 2% split's own 0.78, vs the default's 0.75: identical seeds
    assert (
        "| -2.00 [-2.00, -2.00] | +0.00 [+0.00, +0.00] | +3.00 [+3.00, +3.00] | -2.00 (symmetric 0.2) |"
        in row
    )


def _module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_runs_abstain_below_ten_epochs_and_read_at_twelve():
    short = _module("noise_map_short")
    run = {**_run(0, "none", 3, 3, epochs=12, n=400), "name": "x_mlp_none00_s0"}
    run.update(dataset="x", model="mlp", noise="none", rate=0.0, seed=0, test_acc=np.full(12, 0.7))
    rows = short.analyse(run)
    assert [r["epochs"] for r in rows] == [3, 5, 8, 12, 12]
    assert [r["reliable"] for r in rows] == [0, 0, 0, 1, 1]
    assert all(r["class_conditional_after"] == 0 and r["map_rate"] == 0 for r in rows)
    assert "at least 10 epochs" in rows[0]["reason"] and rows[3]["reason"] == ""


def test_flag_f1_counts_true_positives_against_both_sides():
    flags = _module("noise_map_flags")
    assert flags.f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == 0.5
    assert flags.f1(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


def _lofo_run(family, noise, ambiguous, err, concentration, loses, usable=1):
    return {
        "family": family,
        "noise": noise,
        "ambiguous": ambiguous,
        "gwa_rate": 0.2 + err,
        "true_rate": 0.2,
        "concentration": concentration,
        "loses": loses,
        "usable_pairs": usable,
    }


def test_the_constants_are_chosen_by_their_stated_rules(nm):
    runs = [
        _lofo_run("a", "none", 0.05, 0.01, 0.0, 0),
        _lofo_run("a", "pair", 0.07, -0.02, 0.3, 1),
        _lofo_run("b", "symmetric", 0.09, 0.08, 0.0, 0),  # off by 8 points: a cap >= 0.09 lets it in
        _lofo_run("b", "pair", 0.12, 0.01, 0.2, 1, usable=0),  # abstains for another reason: never fires
    ]
    # mean |error| of the kept runs: 0.010 (cap 0.05), 0.015 (0.07), 0.037 (0.09): the largest within 3 points
    assert nm.choose_max_ambiguous(runs) == 0.085
    assert nm.choose_max_ambiguous(runs[2:3]) == 0.05  # none within 3 points: the smallest cap
    assert nm.firing(runs, 0.25) == (1, 2, 0, 2) and nm.firing(runs, 0.35) == (0, 2, 0, 2)
    # J = 1/2 for every alarm in (0, 0.3]; the larger alarm wins the tie
    assert nm.choose_concentration(runs) == 0.3
    assert nm.firing_oracle(runs) == "2/2 where the default loses and 0/2 elsewhere"
