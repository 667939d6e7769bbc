"""gwa.class_evidence: per-class moments, shares and confusion counts against hand-computed values."""

import json
import math

import numpy as np
import pytest

import gwa
from gwa._class_evidence import CONFIDENT_MARGIN, ClassEvidence


def test_per_class_values_by_hand():
    scores = np.array([0.4, -0.2, 0.1, 0.3, np.nan, -0.6, 0.2])
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 2, 0, 1, 0, 1, 2])
    ev = gwa.class_evidence(scores, labels, preds, num_classes=3)
    assert ev.count.tolist() == [3, 1, 2]  # the NaN (unseen) sample of class 1 is skipped
    assert ev.correct.tolist() == [2, 1, 1]
    np.testing.assert_allclose(ev.mean, [0.1, 0.3, -0.2])
    np.testing.assert_allclose(ev.std, [np.std([0.4, -0.2, 0.1]), 0.0, 0.4])
    assert math.isnan(ev.excess_kurtosis[1])  # one sample: undefined, as gwa.Moments
    np.testing.assert_allclose(
        ev.excess_kurtosis[0], gwa.Moments.from_values([0.4, -0.2, 0.1]).excess_kurtosis
    )
    np.testing.assert_allclose(ev.negative_share, [1 / 3, 0.0, 0.5])
    assert ev.negative_confusion.tolist() == [[0, 0, 1], [0, 0, 0], [0, 1, 0]]
    # scale: per class the mean positive score; confident: |s| >= 0.5 * scale of the predicted (off the diagonal)
    # or the given class (on it): -0.2 -> class 2 (<= -0.1) and -0.6 -> class 1 (<= -0.15) count, 0.1 (< 0.125) not
    np.testing.assert_allclose(ev.scale, [0.25, 0.3, 0.2])
    assert CONFIDENT_MARGIN == 0.5
    assert ev.confident_confusion.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]


def test_matches_a_per_class_loop_on_random_data():
    rng = np.random.default_rng(3)
    n, c = 2000, 7
    s = rng.normal(0.05, 0.1, n)
    s[rng.random(n) < 0.05] = np.nan
    y, p = rng.integers(0, c, n), rng.integers(0, c, n)
    ev = gwa.class_evidence(s, y, p, c)
    for k in range(c):
        v = s[(y == k) & ~np.isnan(s)]
        m = gwa.Moments.from_values(v)
        assert ev.count[k] == v.size
        np.testing.assert_allclose(
            [ev.mean[k], ev.std[k], ev.excess_kurtosis[k]], [m.mean, m.std, m.excess_kurtosis]
        )
        assert ev.negative_share[k] == pytest.approx((v < 0).mean())
    seen = ~np.isnan(s)
    assert ev.negative_confusion.sum() == int((s[seen] < 0).sum())


def test_round_trip_through_json():
    ev = gwa.class_evidence([0.2, -0.3, 0.1, 0.5], [0, 1, 1, 2], [0, 0, 1, 2], num_classes=4)
    back = ClassEvidence.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back == ev and back.count.tolist() == [1, 2, 1, 0]
    assert ev.to_dict()["mean"][3] is None  # no sample of class 3: null, not NaN


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format 1; got format 2"),
        ({"count": [1, -1, 1, 0]}, "`count` as a list of counts"),
        ({"negative_share": [0.0, 1.5, 0.0, None]}, "`negative_share` in [0, 1]"),
        ({"mean": [0.1, "x", 0.1, None]}, "`mean` as a list of finite numbers"),
        ({"negative_confusion": [[0, 0], [0, 0]]}, "`negative_confusion` as a C x C table"),
        ({"correct": [5, 0, 0, 0]}, "at most `count` per class"),
        ({"scale": [0.1, -1, 0.1, None]}, "`scale` as numbers >= 0"),
    ],
)
def test_from_dict_rejects_bad_fields(change, message):
    d = gwa.class_evidence([0.2, -0.3, 0.1, 0.5], [0, 1, 1, 2], [0, 0, 1, 2], num_classes=4).to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        ClassEvidence.from_dict(d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 1]}, r"`labels` as integer class ids of shape \(3,\)"),
        ({"predictions": [0, 1, 3]}, r"`predictions` in \[0, 2\]"),
        ({"labels": [0.0, 1.0, 2.0]}, "`labels` as integer class ids"),
        ({"scores": [0.1, np.inf, 0.2]}, "finite `scores`"),
        ({"num_classes": 1}, "`num_classes` to be an integer >= 2"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    args = {"scores": [0.1, -0.2, 0.3], "labels": [0, 1, 2], "predictions": [0, 0, 2], "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        gwa.class_evidence(**args)
