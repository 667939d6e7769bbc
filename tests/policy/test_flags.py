"""Flag rules of the core policy on hand-built alignment matrices."""

import math

import numpy as np
import pytest

from gwa.policy import DEFAULT_FLAG_RULE, check_flag_options, flag_scores, flag_window

NAN = math.nan
# 4 epochs x 5 samples; sample 4 never seen, sample 3 seen twice.
M = np.array(
    [
        [0.3, -0.1, -0.5, NAN, NAN],
        [0.2, -0.2, 0.1, -0.3, NAN],
        [-0.1, -0.3, -0.4, NAN, NAN],
        [0.1, -0.4, -0.2, -0.1, NAN],
    ]
)


def test_lastk_flags_samples_negative_in_each_of_their_last_k_seen_epochs():
    score, flagged, key = flag_scores(M, rule="lastk", last_k=3)
    np.testing.assert_allclose(score[:4], [0.2 / 3, -0.3, -0.5 / 3, -0.2])
    assert flagged.tolist() == [False, True, False, True, False]
    assert math.isnan(score[4]) and math.isnan(key[4])


def test_mean_and_frac_rules():
    score, flagged, _ = flag_scores(M, rule="mean")
    np.testing.assert_allclose(score[:4], [0.125, -0.25, -0.25, -0.2])
    assert flagged.tolist() == [False, True, True, True, False]
    frac, flagged, key = flag_scores(M, rule="frac", threshold=0.75)
    np.testing.assert_allclose(frac[:4], [0.25, 1.0, 0.75, 1.0])
    assert flagged.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(key[:4], -frac[:4])


def test_options_are_checked():
    assert check_flag_options("frac", 3, None, None) == 0.5
    with pytest.raises(
        ValueError, match=r"`rule` to be one of \['frac', 'lastk', 'mean', 'pair_aware', 'window'\]; got 'x'"
    ):
        flag_scores(M, rule="x")
    with pytest.raises(ValueError, match="`last_k` to be an integer >= 1; got 0"):
        flag_scores(M, last_k=0)
    with pytest.raises(ValueError, match="`threshold` to be a finite number; got nan"):
        flag_scores(M, threshold=NAN)
    with pytest.raises(ValueError, match=r"`threshold` in \[0, 1\] for rule 'frac'"):
        flag_scores(M, rule="frac", threshold=2.0)
    with pytest.raises(ValueError, match=r"`matrix` of shape \(epochs, samples\); got shape=\(3,\)"):
        flag_scores(np.zeros(3))


def _rows(gwa_curve, acc=None):
    return [{"gwa": g, **({} if acc is None else {"train_acc": acc[i]})} for i, g in enumerate(gwa_curve)]


def test_window_rule_averages_from_the_warm_up_to_the_choice_past_the_transient():
    assert DEFAULT_FLAG_RULE == "window"
    # 4 epochs: no warm-up; GWA peaks at epoch 2, so the window is epochs 1-2
    score, flagged, key = flag_scores(M, history=_rows([0.1, 0.3, 0.2, 0.1]))
    np.testing.assert_allclose(score[:4], [0.25, -0.15, -0.2, -0.3])  # sample 3 seen once in the window
    assert flagged.tolist() == [False, True, True, True, False]
    assert math.isnan(score[4]) and math.isnan(key[4])
    np.testing.assert_allclose(key[:4], score[:4])
    # planned for 20 epochs: the first 2 are warm-up, the window is epoch 3 (GWA's maximum after it) alone
    score, _, _ = flag_scores(M, history=_rows([0.1, 0.3, 0.2, 0.1]), total_epochs=20)
    np.testing.assert_allclose(score[:3], [-0.1, -0.3, -0.4])
    assert math.isnan(score[3])  # unseen in epoch 3
    # M's estimated noise rate is 75% (3 of 4 seen samples have a negative mean), so the model fits about 0.25:
    # epochs 1-2 (0.05, 0.08) are in the early transient and the window ends at epoch 3, GWA's maximum after it
    rows = _rows([0.1, 0.3, 0.2, 0.1], acc=[0.05, 0.08, 0.25, 0.25])
    assert flag_window(rows, M) == (1, 3)
    score, _, _ = flag_scores(M, history=rows, threshold=-0.2)
    np.testing.assert_allclose(score[:4], [0.4 / 3, -0.2, -0.8 / 3, -0.3])


def test_window_rule_needs_the_history_and_falls_back_without_gwa():
    with pytest.raises(ValueError, match=r"Rule 'window' needs `history` \(the run's metric rows"):
        flag_scores(M)
    with pytest.raises(ValueError, match=r"`history` with one entry per row of `matrix` \(4\); got 3"):
        flag_scores(M, history=_rows([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="non-empty `history`"):
        flag_window([], M)
    # no finite GWA anywhere: the window runs from the warm-up to the last epoch
    assert flag_window([{}, {}, {}, {}], M) == (1, 4)
    assert flag_window([{}] * 4, M, total_epochs=20) == (3, 4)
