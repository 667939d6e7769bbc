"""The ``pair_aware`` flag rule and the rule gwa chooses, on hand-built runs with answers worked out by hand."""

from dataclasses import replace

import numpy as np
import pytest

from gwa import class_evidence
from gwa.policy import PAIR_SLACK, choose_flag_rule, estimate_noise_map, flag_scores, flag_window

C, PER_CLASS, EPOCHS = 4, 40, 10
# gwa peaks at epoch 3 past the warm-up (epoch 1): the window is epochs 2-3 (as flag_window's example).
ROWS = [{"gwa": g, "train_acc": 0.9} for g in (0.9, 0.2, 0.5, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2)]


def pair_run():
    """Classes 0 and 2 hold 10 flipped labels each whose true classes are 1 and 3 (two swapped pairs).

    Per flipped group of 10: 5 "caught" (alignment -0.15 in both window epochs) and 5 "missed" (-0.15, then
    +0.25: a window mean of +0.05, which ``window`` does not flag); all predicted as their true class over the
    window, then memorised (epochs 4-10: alignment 0.3, predicted as the given label). Clean samples: 0.2. Class 1's
    samples 78 and 79 are hard clean ones (window mean +0.05) predicted 1 and 0: not in a swapped-pair cell.
    Returns (alignment (E, N), predictions (E, N), labels, flipped mask).
    """
    y = np.repeat(np.arange(C), PER_CLASS)
    n = y.size
    align = np.full((EPOCHS, n), 0.3)
    align[:3] = 0.2
    align[0] = 0.0
    pred = np.tile(y.astype(np.float64), (EPOCHS, 1))
    flipped = np.zeros(n, dtype=bool)
    for given, true in ((0, 1), (2, 3)):
        start = given * PER_CLASS + 30
        caught, missed = np.arange(start, start + 5), np.arange(start + 5, start + 10)
        flipped[start : start + 10] = True
        align[1:3, caught] = -0.15
        align[1, missed], align[2, missed] = -0.15, 0.25
        pred[1:3, start : start + 10] = true
    align[1, [78, 79]], align[2, [78, 79]] = -0.15, 0.25
    pred[1:3, 79] = 0
    return align, pred, y, flipped


def map_of(align, pred, y):
    """The noise map read from the window's first epoch (epoch 2)."""
    return estimate_noise_map(class_evidence(align[1], y, pred[1].astype(np.int64), C))


def test_the_hand_built_map_names_the_two_swapped_pairs():
    align, pred, y, _ = pair_run()
    assert flag_window(ROWS, align, total_epochs=EPOCHS) == (2, 3)
    nm = map_of(align, pred, y)
    assert [(g, t) for g, t, _ in nm.pairs] == [(0, 1), (2, 3)]
    assert [r for _, _, r in nm.pairs] == pytest.approx([0.25, 0.25])


def test_pair_aware_flags_the_pair_samples_window_misses():
    align, pred, y, flipped = pair_run()
    nm = map_of(align, pred, y)
    w_score, w_flag, _ = flag_scores(align, history=ROWS, total_epochs=EPOCHS)
    p_score, p_flag, p_key = flag_scores(
        align, rule="pair_aware", history=ROWS, total_epochs=EPOCHS, labels=y, predictions=pred, noise_map=nm
    )
    assert np.flatnonzero(w_flag).tolist() == [*range(30, 35), *range(110, 115)]
    assert np.flatnonzero(p_flag).tolist() == [*range(30, 40), *range(110, 120)]  # every flipped label
    assert np.array_equal(p_flag, flipped)
    # Class 0's scale: the mean of its positive window means, 30 x 0.2 and 5 x 0.05, over 35.
    slack = PAIR_SLACK * (30 * 0.2 + 5 * 0.05) / 35
    np.testing.assert_allclose(p_score[35:40], 0.05 - slack)
    np.testing.assert_allclose(p_score[30:35], -0.15 - slack)
    np.testing.assert_allclose(p_key, p_score)
    # Outside the pair cells the score is the window mean: hard clean samples 78 (predicted 1) and 79 (predicted
    # 0, a cell the map does not name) keep +0.05 and stay unflagged.
    outside = ~(
        ((y == 0) & (np.arange(y.size) >= 30) & (np.arange(y.size) < 40))
        | ((y == 2) & (np.arange(y.size) >= 110))
    )
    np.testing.assert_allclose(p_score[outside], w_score[outside])
    assert not p_flag[[78, 79]].any()


def test_pair_aware_without_pairs_or_map_equals_window():
    align, pred, y, _ = pair_run()
    w = flag_scores(align, history=ROWS, total_epochs=EPOCHS)
    abstaining = replace(map_of(align, pred, y), reliable=False, reason="too few epochs")
    for nm in (None, abstaining):
        p = flag_scores(
            align,
            rule="pair_aware",
            history=ROWS,
            total_epochs=EPOCHS,
            labels=y,
            predictions=pred,
            noise_map=nm,
        )
        for a, b in zip(w, p):
            np.testing.assert_array_equal(a, b)


def symmetric_map():
    """6 flipped labels per class of 40, 2 to each other class (5% a cell, below a pair's 8%)."""
    y = np.repeat(np.arange(C), PER_CLASS)
    pred, score = y.copy(), np.full(y.size, 0.2)
    for c in range(C):
        others = [k for k in range(C) if k != c]
        idx = c * PER_CLASS + np.arange(6)
        pred[idx], score[idx] = np.repeat(others, 2), -0.15
    return estimate_noise_map(class_evidence(score, y, pred, C))


def test_the_rule_gwa_chooses():
    align, pred, y, _ = pair_run()
    nm = map_of(align, pred, y)
    rule, why = choose_flag_rule(nm)
    assert rule == "pair_aware" and "swapped class pairs (given->likely true: 0->1 25%, 2->3 25%)" in why
    sym = symmetric_map()
    assert sym.rate == pytest.approx(0.15) and sym.pairs == ()
    assert choose_flag_rule(sym) == ("window", "the run's noise map names no swapped class pair")
    assert choose_flag_rule(replace(nm, reliable=False, reason="under-fitted")) == (
        "window",
        "the run's noise map abstains (under-fitted)",
    )
    assert choose_flag_rule(replace(nm, concentration=0.3))[0] == "window"  # spread noise, a pair by chance
    assert choose_flag_rule(None) == ("window", "the run has no per-class evidence (no noise map)")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": None}, r"needs `labels` and `predictions`.*got labels=None, predictions=given"),
        ({"predictions": np.zeros((3, 160))}, r"Expected `predictions` of shape \(10, 160\), like `matrix`"),
        ({"labels": np.zeros(5, dtype=int)}, r"Expected `labels` of shape \(160,\), one per sample; got"),
    ],
)
def test_pair_aware_bad_inputs(kwargs, match):
    align, pred, y, _ = pair_run()
    args = {"labels": y, "predictions": pred, "noise_map": map_of(align, pred, y), **kwargs}
    with pytest.raises(ValueError, match=match):
        flag_scores(align, rule="pair_aware", history=ROWS, total_epochs=EPOCHS, **args)
