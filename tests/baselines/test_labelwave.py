import numpy as np
import pytest

from gwa.baselines import labelwave as lw


def test_prediction_changes_counts_differences_and_skips_unseen():
    prev = np.array([0, 1, 2, 3, np.nan, 5])
    cur = np.array([0, 2, 2, 1, 4, np.nan])
    assert lw.prediction_changes(prev, cur) == 2  # ids 1 and 3; ids 4, 5 unseen in one epoch
    assert lw.prediction_changes(np.array([1, 2]), np.array([2, 1])) == 2  # integer arrays


def test_prediction_change_curve_matches_pairwise_counts():
    p = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(lw.prediction_change_curve(p), [np.nan, 2, 0, 3])


def test_moving_average_is_trailing_and_nan_until_full():
    v = [np.nan, 6, 3, 0, 9]
    np.testing.assert_allclose(lw.moving_average(v, 2), [np.nan, np.nan, 4.5, 1.5, 4.5])
    np.testing.assert_allclose(lw.moving_average(v, 3), [np.nan, np.nan, np.nan, 3.0, 4.0])
    np.testing.assert_allclose(lw.moving_average(v, 1), v)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5, 3, 2, 4, 1], 2),  # first dip, not the global minimum
        ([5, 3, 3, 4], 1),  # flat stretch then rise: its first epoch
        ([5, 3, 3, 2, 4], 3),  # flat stretch then a further fall: keep going
        ([5, 4, 3, 2], 3),  # never rises: the last epoch
        ([1, 2, 3], 0),  # rises at once: the first epoch
        ([np.nan, np.nan, 4, np.nan, 3, 5], 4),  # NaNs are skipped
    ],
)
def test_first_local_minimum(values, expected):
    assert lw.first_local_minimum(values) == expected


def test_select_epoch_on_a_hand_built_sequence():
    pc = [np.nan, 90, 60, 40, 35, 38, 50, 70]
    assert lw.select_epoch(pc, k=1) == 4
    # k=3: smoothed = [nan, nan, nan, 63.33, 45, 37.67, 41, 52.67] -> minimum at index 5
    assert lw.select_epoch(pc, k=3) == 5
    # a noisy dip that the window smooths away: k=1 stops at the dip, k=3 later
    pc2 = [np.nan, 100, 80, 82, 60, 50, 45, 47, 60]
    assert lw.select_epoch(pc2, k=1) == 2
    assert lw.select_epoch(pc2, k=3) == 7  # smoothed: 87.3, 74, 64, 51.7, 47.3, 50.7


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="`k`"):
        lw.moving_average([1, 2], 0)
    with pytest.raises(ValueError, match="consecutive finite"):
        lw.select_epoch([np.nan, 1, 2], k=3)
    with pytest.raises(ValueError, match="finite value"):
        lw.first_local_minimum([np.nan, np.nan])
    with pytest.raises(ValueError, match="same shape"):
        lw.prediction_changes(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(E, N\)"):
        lw.prediction_change_curve(np.zeros(3))
