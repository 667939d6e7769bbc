"""gwa train's per-class surfaces: classes.jsonl per epoch, the noise map in summary.json and the printout, the
--veto-frac split's accuracy and the veto's choice, all equal to the core's over what the run directory holds."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("torch")

import gwa
from gwa import policy
from gwa.rundir import load_run
from gwa.runner.config import RunConfig
from gwa.runner.data import load_digits
from gwa.runner.summary import print_summary
from gwa.runner.train import run_training

TINY = {
    "dataset": "digits",
    "num_train": 400,
    "model": "mlp",
    "hidden": (16,),
    "batch_size": 64,
    "quiet": True,
    "noise": "asymmetric",
    "noise_rate": 0.3,
}


@pytest.mark.slow  # trains 5 epochs of a tiny MLP: 5-15 s
def test_classes_noise_map_and_veto_equal_the_core_over_the_run_directory(tmp_path):
    config = RunConfig(**TINY, epochs=5, veto_frac=0.05, out=str(tmp_path / "run"))
    run = load_run(run_training(config, progress=False))
    assert [r["epoch"] for r in run.classes] == run.epochs == [1, 2, 3, 4, 5]
    evidence = run.class_evidence()
    for epoch, record in zip(run.epochs, evidence, strict=True):
        scores, pred = run.scores(epoch), run.scores(epoch, "pred")
        assert record == gwa.class_evidence(scores, run.labels, pred.astype(np.int64), 10)
        assert record.count.sum() == run.labels.size == 380  # 5% of 400 held out for the veto
    rows = run.metrics
    assert all(0 <= r["veto_acc"] <= 1 and 0 <= r["veto_acc_clean"] <= 1 for r in rows)
    expected = policy.noise_map_of_run(rows, evidence, total_epochs=5)
    names = [str(k) for k in range(10)]
    assert run.summary["noise_estimate"] == {**expected.to_dict(), "description": expected.describe(names)}
    veto_rows = [{**r, "class_evidence": e} for r, e in zip(rows, evidence, strict=True)]
    assert run.summary["criteria"]["veto"]["epoch"] == policy.choose_with_veto(veto_rows, total_epochs=5)[0]
    assert (
        run.summary["criteria"]["veto"]["veto_acc"]
        == rows[run.summary["criteria"]["veto"]["epoch"] - 1]["veto_acc"]
    )
    assert (
        run.summary["best_checkpoint"]["epoch"] == run.summary["criteria"]["gwa"]["epoch"]
    )  # the criterion's own
    assert run.config["class_names"] == names and run.config["source_size"] == load_digits().y_train.size
    codes = [d["code"] for d in run.summary["diagnostics"]]
    assert ("class_conditional" in codes) == policy.is_class_conditional(expected)
    printed = io.StringIO()
    print_summary(run.path, file=printed)
    # the noise gwa added (its realised rate) printed right above the map's estimate of it
    realised = f"  label noise added: asymmetric 0.3, {100 * run.summary['realised_noise_rate']:.1f}% of labels flipped\n"
    assert f"{realised}  {expected.describe(names)}\n" in printed.getvalue()
    assert run.summary["realised_noise_rate"] == pytest.approx(float(run.noise_mask.mean()))
    assert "  veto " in printed.getvalue()


def test_veto_frac_on_the_command_line_defaults_to_two_percent():
    from argparse import ArgumentParser

    from gwa.cli.train import add_arguments, config_from_args

    parser = ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--veto-frac"])).veto_frac == 0.02
    assert config_from_args(parser.parse_args(["--veto-frac", "0.05"])).veto_frac == 0.05
    assert config_from_args(parser.parse_args([])).veto_frac == 0.0


@pytest.mark.slow  # trains 3 epochs of the default digits MLP: about 5-10 s
def test_a_clean_three_epoch_digits_run_abstains_and_raises_no_class_conditional(tmp_path, capsys):
    # Issue 18: `gwa train --dataset digits --epochs 3` once read 63% noise on clean data and raised
    # class_conditional from its early transient.
    from gwa import cli

    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "3", "--out", str(out)]) == 0
    run = load_run(out)
    estimate = run.summary["noise_estimate"]
    assert estimate["reliable"] is False and "at least 10 epochs" in estimate["reason"]
    codes = [d["code"] for d in run.summary["diagnostics"]]
    assert "class_conditional" not in codes and "label_noise" not in codes
    assert "  noise map: not enough evidence yet (" in capsys.readouterr().out
