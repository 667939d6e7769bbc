"""experiments/finetune_rule.py and experiments/model_ranking.py: their rules on hand-built curves, and each
experiment end to end at tiny size (digits, 2-3 epochs, seconds)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from gwa.rundir import load_run

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def finetune_rule():
    return _script("finetune_rule")


@pytest.fixture(scope="module")
def model_ranking():
    return _script("model_ranking")


def test_the_fine_tuning_rule_waits_for_the_first_minimum(finetune_rule):
    # 10 epochs: warm-up 1. gwa peaks early (epoch 2), dips to its first minimum at epoch 4, peaks again at 7.
    gwa = [0.5, 0.9, 0.6, 0.4, 0.5, 0.7, 0.8, 0.75, 0.7, 0.6]
    paper = [0.5, 0.2, 0.3, 0.35, 0.3, 0.2, 0.25, 0.4, 0.1, 0.0]
    test = [0.50, 0.60, 0.62, 0.64, 0.70, 0.72, 0.80, 0.79, 0.78, 0.77]
    full = [
        {"epoch": e, "gwa": g, "gwa_paper": p, "align_mean": g, "test_acc": t}
        for e, (g, p, t) in enumerate(zip(gwa, paper, test), 1)
    ]
    val = [
        {"epoch": e, "val_acc": v, "test_acc": t}
        for e, (v, t) in enumerate(zip([0.1] * 5 + [0.3] * 5, test), 1)
    ]
    picks = finetune_rule.choices(full, val, 10)
    epochs = {label: p["epoch"] for label, p in picks.items()}
    assert epochs == {
        "gwa, fine-tuning rule": 7,
        "gwa_paper, fine-tuning rule": 8,  # paper rises at once (epoch 2 is its first minimum), max at 8
        "align_mean, fine-tuning rule": 7,
        "gwa, default rule": 2,
        "gwa_paper, default rule": 8,
        "val10 split (noisy labels)": 6,  # ties go to the earliest epoch
        "last epoch": 10,
        "oracle (best test)": 7,
    }
    assert (
        picks["gwa, default rule"]["test_acc"] == 0.60 and picks["gwa, fine-tuning rule"]["test_acc"] == 0.80
    )
    assert finetune_rule.first_minimum_epoch(full, "gwa", 10) == 4
    assert finetune_rule.first_minimum_epoch(full, "gwa_paper", 10) == 2
    assert (
        finetune_rule.first_minimum_epoch([{"g": v} for v in (3, 2, 1)], "g", 3) == 3
    )  # never rises: the last


@pytest.mark.slow  # trains runs end to end
def test_finetune_experiment_end_to_end_tiny(finetune_rule, tmp_path):
    plan = finetune_rule.Plan(
        dataset="digits",
        model="mlp",
        model_options=(("hidden", (16,)),),
        pretrain_train=300,
        finetune_train=300,
        pretrain_epochs=2,
        epochs=3,
        noises=(("none", 0.0), ("asymmetric", 0.4)),
        seeds=(0, 1),
    )
    finetune_rule.train_all(plan, tmp_path, log=lambda *_: None)
    body = torch.load(tmp_path / "body_seed0.pt", weights_only=True)
    assert body and not any(k.startswith("head.") for k in body)
    whole = finetune_rule.save_body(tmp_path / "pretrain_seed0", tmp_path / "whole.pt", keep_head=True)
    assert set(torch.load(whole, weights_only=True)) == {*body, "head.weight", "head.bias"}
    run = load_run(tmp_path / "finetune_asy0.4_seed1_full")
    assert run.config["init_checkpoint"] == str(tmp_path / "body_seed0.pt").replace("seed0", "seed1")
    assert (
        run.config["classes"] == [5, 6, 7, 8, 9] and run.labels.max() == 4 and run.config["finetune"] is True
    )
    # digits pairs inside 5-9: 5 <-> 6 only, i.e. new ids 0 <-> 1
    assert set(run.labels[run.noise_mask].tolist()) == {0, 1}
    result = finetune_rule.analyse(plan, tmp_path)
    assert set(result["settings"]) == {"clean", "asy0.4"} and set(result["pooled_noisy"]["last epoch"]) == {
        "test_acc",
        "delta",
        "epochs",
    }
    reference = finetune_rule.REFERENCE
    for setting, by_seed in result["runs"].items():
        assert set(by_seed) == {"0", "1"}
        for picks in by_seed.values():
            assert picks["last epoch"]["epoch"] == 3 and 1 <= picks["_first_minimum_epoch"] <= 3
            # the oracle bounds every rule of the full run (the split's pick is from its own run)
            accs = [p["test_acc"] for k, p in picks.items() if not k.startswith("_") and k != reference]
            assert picks["oracle (best test)"]["test_acc"] == max(accs)
        cell = result["settings"][setting]
        assert cell[reference]["delta"] == [0.0, 0.0, 0.0]
        diffs = [100 * (p["last epoch"]["test_acc"] - p[reference]["test_acc"]) for p in by_seed.values()]
        assert cell["last epoch"]["delta"][0] == pytest.approx(np.mean(diffs))
    assert "| gwa, fine-tuning rule |" in finetune_rule.table(result)
    json.dumps(result)  # the raw result is JSON


@pytest.mark.slow  # trains and compares runs end to end
def test_model_ranking_end_to_end_tiny(model_ranking, tmp_path):
    plan = model_ranking.Plan(
        dataset="digits",
        data_options=(),
        architectures=("mlp-32", "mlp-128", "cnn-w4"),
        epochs=10,
        seeds=(0, 1),
    )
    model_ranking.train_all(plan, tmp_path, log=lambda *_: None)
    result = model_ranking.analyse(plan, tmp_path, resamples=200)
    assert result["seeds_per_architecture"] == 2 and set(result["means"]) == set(plan.architectures)
    run = load_run(tmp_path / "digits_cnn-w4_seed1_full")
    assert (
        run.config["width"] == 4 and result["runs"]["cnn-w4"]["1"]["test_last"] == run.metrics[-1]["test_acc"]
    )
    values = result["runs"]["cnn-w4"]["1"]
    assert values["max_align"] == pytest.approx(max(r["align_mean"] for r in run.metrics))
    # 10 epochs: warm-up 1, so the exploratory statistic skips epoch 1
    assert values["max_align_after_warmup"] == pytest.approx(max(r["align_mean"] for r in run.metrics[1:]))
    assert set(result["tau_over_architectures"]) == {f"{s} vs {t}" for s, t in model_ranking.PAIRS}
    for key, tau in result["tau_over_architectures"].items():
        stat, target = key.split(" vs ")
        x = [result["means"][a][stat] for a in plan.architectures]
        y = [result["means"][a][target] for a in plan.architectures]
        expected = stats.kendalltau(x, y).statistic
        assert tau["tau"] == pytest.approx(expected, nan_ok=True) and tau["groups"] == 3
    # gwa compare over the 6 full runs: its own per-run correlations
    assert {c["n"] for c in result["gwa_compare_over_runs"]} == {6}
    assert "| ranking by | against |" in model_ranking.tables(result)
    json.dumps(result)


def test_the_replications_pooled_tables_recompute_from_the_committed_csvs():
    """docs/noise-map.md quotes these R′ numbers; they come from the committed per-run files alone."""
    pooled = _script("noise_map_pooled")
    folder = EXPERIMENTS.parent / "docs" / "data" / "noise-map-replication"
    table = pooled.pooled_table(folder)
    assert "| all | all | 105 | -1.13 [-1.80, -0.45] |" in table
    assert "| -0.88 [-1.54, -0.23] |" in table.splitlines()[-1]  # the veto over all 105 runs
    firing = pooled.firing_table(folder)
    assert "| `class_conditional` | 12/28 | 31/77 |" in firing
    assert "| `split_disagrees` | 25/28 | 27/77 |" in firing
    assert "| spread of 5+ epochs among gwa's candidates (post hoc) | 27/28 | 54/77 |" in firing
    flags = pooled.flags_table(folder)
    assert "| all | pair | 28 | +0.069 [+0.059, +0.079] | +0.064 [+0.056, +0.072] |" in flags
