"""Flag rules of the core policy on hand-built alignment matrices."""

import math

import numpy as np
import pytest

from gwa.policy import check_flag_options, flag_scores

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
    with pytest.raises(ValueError, match=r"`rule` to be one of \['frac', 'lastk', 'mean'\]; got 'x'"):
        flag_scores(M, rule="x")
    with pytest.raises(ValueError, match="`last_k` to be an integer >= 1; got 0"):
        flag_scores(M, last_k=0)
    with pytest.raises(ValueError, match="`threshold` to be a finite number; got nan"):
        flag_scores(M, threshold=NAN)
    with pytest.raises(ValueError, match=r"`threshold` in \[0, 1\] for rule 'frac'"):
        flag_scores(M, rule="frac", threshold=2.0)
    with pytest.raises(ValueError, match=r"`matrix` of shape \(epochs, samples\); got shape=\(3,\)"):
        flag_scores(np.zeros(3))
