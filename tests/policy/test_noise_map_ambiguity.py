"""The noise map's ambiguity abstention and the class_conditional alarm, on hand-built evidence with known answers."""

from dataclasses import replace

import numpy as np
import pytest
from tests.policy._noisy_runs import SWAPS, SYMMETRIC, epoch, run

import gwa
from gwa import policy
from gwa.policy import NoiseMap, estimate_noise_map
from gwa.policy._noise_map import CONCENTRATION_ALARM, MAX_AMBIGUOUS


def test_ambiguous_share_by_hand():
    # Class 0: 8 fitted (+0.1), one flipped-looking (-0.08 <= -0.5 * scale[1] = -0.05, predicted 1: confident)
    # and one hard (-0.01, predicted 1: negative, not confident). Class 1: 10 fitted. Ambiguous: 1 of 20.
    scores = [0.1] * 8 + [-0.08, -0.01] + [0.1] * 10
    labels = [0] * 10 + [1] * 10
    preds = [0] * 8 + [1, 1] + [1] * 10
    ev = gwa.class_evidence(scores, labels, preds, 2)
    assert ev.negative.tolist() == [2, 0] and ev.confident_confusion.tolist() == [[8, 1], [0, 10]]
    assert policy.ambiguous_share([ev]) == pytest.approx(1 / 20)
    assert policy.ambiguous_share([ev, ev]) == pytest.approx(1 / 20)  # counts summed over epochs
    assert estimate_noise_map(ev).rate == pytest.approx(1 / 9 * 10 / 20)  # 1 of class 0's 9 confident sides


@pytest.mark.parametrize(("hard", "ambiguous"), [(0.0, False), (0.05, False), (0.15, True)])
def test_the_map_abstains_when_too_many_samples_are_misfit_without_confidence(hard, ambiguous):
    nm = policy.noise_map_of_run(run({}, hard=hard))
    assert nm.rate == 0.0  # the estimate itself does not move: hard clean samples are on neither side
    assert policy.is_ambiguous(nm) is ambiguous and nm.reliable is not ambiguous
    if ambiguous:
        assert nm.reason.startswith("ambiguous: 1") and f"at most {MAX_AMBIGUOUS:.1%}" in nm.reason
        assert nm.describe().startswith("noise map: not enough evidence yet (ambiguous: ")
        assert policy.diagnose(run({}, hard=hard)) == []  # no pairs, and no rate to report as label_noise


def test_symmetric_noise_stays_reliable_and_informational():
    nm = policy.noise_map_of_run(run(SYMMETRIC))
    assert nm.reliable and policy.ambiguous_share([r["class_evidence"] for r in run(SYMMETRIC)]) == 0.0
    assert [d.code for d in policy.diagnose(run(SYMMETRIC))] == ["label_noise"]


def test_an_ambiguous_map_with_swapped_pairs_still_raises_class_conditional_without_a_rate():
    rows = run(SWAPS, hard=0.15)  # swapped pairs plus hard clean samples predicted as the next class
    nm = policy.noise_map_of_run(rows)
    assert policy.is_ambiguous(nm) and {(g, t) for g, t, _ in nm.pairs} == set(SWAPS)
    assert policy.is_class_conditional(nm)
    found = {d.code: d for d in policy.diagnose(rows)}
    assert set(found) == {"class_conditional"}
    d = found["class_conditional"]
    assert "the noise map cannot tell which (no rate estimated)" in d.message
    assert d.evidence["noise_rate"] is None and d.evidence["reliable"] is False
    assert d.action == "keep a small validation split (or use --veto-frac)"
    # the pair_aware flag rule keeps reading an ambiguous map's pairs (its flags were measured so)
    assert policy.choose_flag_rule(nm)[0] == "pair_aware"


def test_class_conditional_fires_at_the_concentration_alarm():
    nm = policy.noise_map_of_run(run(SWAPS))
    assert nm.reliable and CONCENTRATION_ALARM == 0.1
    assert policy.is_class_conditional(replace(nm, concentration=0.12))
    assert not policy.is_class_conditional(replace(nm, concentration=0.08))
    assert not policy.is_class_conditional(replace(nm, pairs=()))
    # a map abstaining for another reason than ambiguity never fires
    assert not policy.is_class_conditional(replace(nm, reliable=False, reason="under-fitted: ..."))
    # the flag rule keeps its own, higher concentration (0.5)
    assert policy.choose_flag_rule(replace(nm, concentration=0.3))[0] == "window"


def test_an_ambiguous_map_round_trips():
    nm = policy.noise_map_of_run(run(SWAPS, hard=0.15))
    back = NoiseMap.from_dict(nm.to_dict())
    assert policy.is_ambiguous(back) and back.pairs == nm.pairs


def test_hard_samples_leave_the_ratio_and_lift_it_by_their_share():
    # The map's ratio drops hard samples (misfit near 0) from both sides, so a class's share is its flipped
    # samples over the samples that are *not* hard: above the truth by 1 / (1 - hard share). That is why a map
    # with many of them abstains.
    ev, truth = epoch(SWAPS, hard=0.15)
    nm = estimate_noise_map(ev)
    hard = ev.negative - (ev.confident_confusion.sum(axis=1) - np.diag(ev.confident_confusion))
    flips = np.array([60, 60, 50, 50, 0, 0])  # 0.3 / 0.3 / 0.25 / 0.25 of 200
    np.testing.assert_allclose(nm.per_class, flips / (200 - hard))
    assert {(g, t) for g, t, _ in nm.pairs} == set(SWAPS) and nm.rate > truth
