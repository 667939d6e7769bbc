"""The cleanlab baseline of ``gwa bench``: folds, flag quality, cleanlab on hand-built probabilities, and a reduced
cross-validated run on a digits subset (2 epochs) tabulated beside gwa's flag rules."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("cleanlab")

from gwa.bench import cleanlab_baseline as cb
from gwa.bench import command, results, tables


def test_folds_are_stratified_disjoint_and_cover_every_sample():
    labels = np.repeat(np.arange(5), 10)
    folds = cb.fold_ids(labels, 5, seed=3)
    assert len(folds) == 5
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(50))
    for f in folds:
        assert np.array_equal(np.bincount(labels[f], minlength=5), [2] * 5)
    assert [f.tolist() for f in cb.fold_ids(labels, 5, seed=3)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in cb.fold_ids(labels, 5, seed=4)] != [f.tolist() for f in folds]


def test_flag_quality_on_hand_built_sets():
    mask = np.array([True, False, True, False, False])
    assert cb.flag_quality(np.array([True, True, False, False, False]), mask) == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    )
    assert cb.flag_quality(np.array([True, False, True, True, False]), mask) == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8}
    )
    nothing = cb.flag_quality(np.zeros(5, dtype=bool), mask)
    assert np.isnan(nothing["precision"]) and nothing["recall"] == 0.0 and nothing["f1"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        cb.flag_quality(np.zeros(4, dtype=bool), mask)


def test_cleanlab_flags_exactly_the_confidently_contradicted_labels():
    # 4 classes x 20 samples; the model is confident and right; labels of samples 0, 21, 42, 63 are flipped
    true = np.repeat(np.arange(4), 20)
    probs = np.full((80, 4), 0.02)
    probs[np.arange(80), true] = 0.94
    labels = true.copy()
    flipped = [0, 21, 42, 63]
    labels[flipped] = (true[flipped] + 1) % 4
    flagged, quality = cb.label_issues(labels, probs)
    assert np.flatnonzero(flagged).tolist() == flipped
    assert set(np.argsort(quality)[:4].tolist()) == set(flipped)
    assert quality[flipped] == pytest.approx(0.02) and np.delete(quality, flipped) == pytest.approx(0.94)


@pytest.mark.slow  # trains the cross-validation folds
def test_reduced_cross_validation_beside_gwa_flag_rules(tmp_path):
    from sklearn.metrics import roc_auc_score

    from gwa.runner.config import RunConfig
    from gwa.runner.data import prepare
    from gwa.runner.train import run_training

    root = tmp_path / "runs"
    config = RunConfig(
        dataset="digits",
        model="mlp",
        hidden=(64,),
        num_train=400,
        noise="symmetric",
        noise_rate=0.3,
        epochs=2,
        lr=1e-2,
        batch_size=32,
        seed=0,
        quiet=True,
        out=str(root / "digits_mlp_sym0.3"),
        name="digits_mlp_sym0.3",
    )
    run_training(config, progress=False)
    command.run_cleanlab_all(root, log=lambda m: None)
    res = cb.load_result(root, "digits_mlp_sym0.3")
    mask = prepare(config).noise_mask
    assert res["pred_probs"].shape == (400, 10) and np.allclose(res["pred_probs"].sum(axis=1), 1.0)
    assert int(res["k"]) == 5 and int(res["sample_passes"]) == 2 * 400 * 4
    # 2 epochs are enough for out-of-sample probabilities that rank the flipped labels far above chance
    assert roc_auc_score(mask, -res["quality"]) > 0.8
    # the bench reads the stored result: cleanlab's numbers recomputed by hand, gwa's rules beside it
    result = results.load_result(root / "digits_mlp_sym0.3")
    assert set(result.flags) == {"window", "lastk", "mean", "frac", "cleanlab"}
    # the default flag rule and the registered noise-rate estimator, recomputed from the run directory
    from gwa.policy import flag_scores
    from gwa.rundir import load_run

    run = load_run(root / "digits_mlp_sym0.3")
    _, flagged, _ = flag_scores(run.score_matrix("alignment"), history=run.metrics, total_epochs=2)
    assert result.flags["window"]["f1"] == pytest.approx(cb.flag_quality(flagged, mask)["f1"])
    assert result.noise_estimates["cand:window_share"] == pytest.approx(flagged.mean())
    assert result.noise_estimates["negative_share"] == pytest.approx(result.noise_estimate)
    assert result.flags["cleanlab"]["f1"] == pytest.approx(cb.flag_quality(res["flagged"], mask)["f1"])
    assert result.flags["cleanlab"]["sample_passes"] == 4 * result.flags["lastk"]["sample_passes"]
    assert 0.0 < result.noise_estimate < 1.0
    table = tables.flag_table([result])
    assert "| cleanlab find_label_issues" in table and "4.0x" in table
    # resumable: a second call trains nothing (the stored file is untouched)
    before = cb.result_path(root, "digits_mlp_sym0.3").stat().st_mtime_ns
    command.run_cleanlab_all(root, log=lambda m: None)
    assert cb.result_path(root, "digits_mlp_sym0.3").stat().st_mtime_ns == before
    assert json.loads((root / "digits_mlp_sym0.3" / "config.json").read_text())["noise_rate"] == 0.3
