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
    assert set(result.flags) == {"window", "lastk", "mean", "frac", "cleanlab", "cleanlab_es"}
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
    # early-stopped folds: each fold at its best accuracy on its held-out fold's noisy labels, epochs 1-2 scored
    assert (
        res["fold_acc"].shape == (5, 2)
        and res["es_epochs"].tolist() == (res["fold_acc"].argmax(axis=1) + 1).tolist()
    )
    assert result.flags["cleanlab_es"]["f1"] == pytest.approx(cb.flag_quality(res["flagged_es"], mask)["f1"])
    assert int(res["eval_passes"]) == 2 * 400 and "early-stopped" in table
    # resumable: a second call trains nothing (the stored file is untouched)
    before = cb.result_path(root, "digits_mlp_sym0.3").stat().st_mtime_ns
    command.run_cleanlab_all(root, log=lambda m: None)
    assert cb.result_path(root, "digits_mlp_sym0.3").stat().st_mtime_ns == before
    assert json.loads((root / "digits_mlp_sym0.3" / "config.json").read_text())["noise_rate"] == 0.3


def test_cleanlab_flags_rank_the_suspicious_end_and_keep_both_recipes():
    # quality perfectly separates the flipped labels (low = suspicious): AUROC 1 for the last-epoch folds; the
    # early-stopped recipe's quality is reversed, AUROC 0: the sign of the ranking is pinned both ways
    mask = np.array([True, True, False, False, False, False])
    quality = np.array([0.1, 0.2, 0.7, 0.8, 0.9, 0.95])
    stored = {
        "flagged": mask.copy(),
        "quality": quality,
        "flagged_es": np.array([True, False, False, False, False, True]),
        "quality_es": 1.0 - quality,
        "sample_passes": np.int64(24),
    }
    out = cb.cleanlab_flags(stored, mask)
    assert out["cleanlab"] == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "auroc": 1.0, "sample_passes": 24.0}
    )
    assert out["cleanlab_es"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "auroc": 0.0, "sample_passes": 24.0}
    )
    del stored["flagged_es"], stored["quality_es"]
    assert set(cb.cleanlab_flags(stored, mask)) == {"cleanlab"}  # results stored before fold-ES existed


def test_fold_models_train_every_epoch_and_stop_at_their_best_noisy_fold_accuracy(monkeypatch):
    # The folds train config.epochs epochs (a 1-epoch fold would pass the other tests); the early-stopped
    # probabilities are those of the epoch with the best held-out accuracy on the noisy labels.
    from gwa.runner import loop
    from gwa.runner.config import RunConfig
    from gwa.runner.data import prepare

    config = RunConfig(dataset="digits", model="mlp", hidden=(16,), num_train=200, epochs=3, batch_size=50,
                       lr=1e-2, seed=1, quiet=True)  # fmt: skip
    data = prepare(config)
    seen = []
    real = loop.epoch_batches
    monkeypatch.setattr(loop, "epoch_batches", lambda n, b, s, e: seen.append(e) or real(n, b, s, e))
    held = np.arange(40)
    fold = cb._train_and_predict(
        config, data.x_train[40:], data.y_train[40:], data.x_train[held], data.y_train[held],
        data.num_classes, data.input_shape,
    )  # fmt: skip
    assert sorted(set(seen) - {1}) == [2, 3] and seen.count(1) >= 2  # steps-per-epoch probe, then epochs 1..3
    assert fold["fold_acc"].shape == (3,)
    best = int(np.argmax(fold["fold_acc"]))
    assert fold["epoch"] == best + 1
    assert (
        float((fold["early_stopped"].argmax(axis=1) == data.y_train[held]).mean()) == fold["fold_acc"][best]
    )
    assert float((fold["last"].argmax(axis=1) == data.y_train[held]).mean()) == fold["fold_acc"][-1]
