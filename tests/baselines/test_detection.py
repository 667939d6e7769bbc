import numpy as np
import pytest

from gwa.baselines import detection as det
from gwa.rundir import RunWriter, load_run

NAN = np.nan


def test_margin_on_hand_written_logits():
    logits = np.array([[3.0, 1.0, 2.0], [0.5, 2.5, 1.0], [1.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1])
    # sample 0: 3 - 2 = 1; sample 1: 0.5 - 2.5 = -2; sample 2: tie with class 0 -> 0
    np.testing.assert_allclose(det.margin(logits, labels), [1.0, -2.0, 0.0])


def test_aum_is_minus_the_mean_margin_over_seen_epochs():
    margins = np.array([[1.0, -2.0, 0.5], [3.0, NAN, -0.5], [2.0, -1.0, NAN]])
    np.testing.assert_allclose(det.aum(margins), [-2.0, 1.5, 0.0])


def test_alignment_scores():
    a = np.array([[0.5, -0.2, 0.1], [0.3, -0.4, NAN], [0.1, 0.2, -0.3]])
    np.testing.assert_allclose(det.alignment_at(a, 0), [-0.5, 0.2, -0.1])
    np.testing.assert_allclose(det.alignment_at(a, -1), [-0.1, -0.2, 0.3])
    np.testing.assert_allclose(det.alignment_mean(a), [-0.3, 0.4 / 3, 0.1])
    np.testing.assert_allclose(det.alignment_frac_negative(a), [0.0, 2 / 3, 0.5])


def test_loss_el2n_confidence():
    loss = np.array([[1.0, 3.0], [2.0, NAN]])
    np.testing.assert_allclose(det.loss_mean(loss), [1.5, 3.0])
    np.testing.assert_allclose(det.el2n(loss, 1), [2.0, NAN])
    np.testing.assert_allclose(det.el2n(loss), [1.5, 3.0])
    np.testing.assert_allclose(det.confidence(np.array([[0.9, 0.1], [0.7, 0.3]])), [-0.8, -0.2])
    assert det.early_epoch_index(30) == 2 and det.early_epoch_index(3) == 0 and det.early_epoch_index(1) == 0


def test_ranking_quality_on_a_known_ranking():
    mask = np.array([True, False, True, False, False])
    perfect = np.array([0.9, 0.1, 0.8, 0.2, 0.3])
    assert det.ranking_quality(perfect, mask) == (1.0, 1.0)
    # positives at ranks 1 and 3 of 5 (descending): AUROC = 5/6 (one of 6 pairs inverted); AP = (1 + 2/3) / 2
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    mask2 = np.array([True, False, True, False, False])
    auroc, auprc = det.ranking_quality(scores, mask2)
    assert auroc == pytest.approx(5 / 6) and auprc == pytest.approx((1 + 2 / 3) / 2)
    # NaN scores (unseen samples) are left out
    auroc, _ = det.ranking_quality(np.array([0.9, NAN, 0.1, 0.2]), np.array([True, True, False, False]))
    assert auroc == 1.0


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`logits`"):
        det.margin(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"`labels` in \[0, 1\]"):
        det.margin(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="`alignment` of shape"):
        det.alignment_mean(np.zeros(4))
    with pytest.raises(ValueError, match="`epoch_index`"):
        det.alignment_at(np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="both clean and mislabeled"):
        det.ranking_quality(np.ones(3), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        det.ranking_quality(np.ones(3), np.zeros(4, dtype=bool))


def test_run_scores_from_a_run_directory(tmp_path):
    mask = np.array([True, False, False, True])
    w = RunWriter(tmp_path / "run", {"name": "t"}, 4, noise_mask=mask)
    rng = np.random.default_rng(0)
    mats = {s: rng.normal(size=(3, 4)) for s in ("alignment", "loss", "margin", "el2n", "p_gold")}
    for e in range(3):
        w.log_epoch({"epoch": e + 1}, {s: m[e] for s, m in mats.items()})
    got = det.run_scores(load_run(tmp_path / "run"), epoch=2)
    np.testing.assert_allclose(got["alignment_at_epoch"], -mats["alignment"][1], rtol=1e-6)
    np.testing.assert_allclose(got["alignment_last"], -mats["alignment"][2], rtol=1e-6)
    np.testing.assert_allclose(got["aum"], -mats["margin"].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(got["el2n_early"], mats["el2n"][0], rtol=1e-6)
    np.testing.assert_allclose(got["confidence"], -mats["p_gold"].mean(axis=0), rtol=1e-6)
    assert set(got) == {
        "alignment_at_epoch",
        "alignment_last",
        "alignment_mean",
        "alignment_frac_negative",
        "loss_mean",
        "aum",
        "el2n_early",
        "el2n_mean",
        "confidence",
    }
    with pytest.raises(ValueError, match="`epoch` among"):
        det.run_scores(load_run(tmp_path / "run"), epoch=9)
