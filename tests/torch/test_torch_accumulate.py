"""Device accumulators: shifted power sums against the two-pass core, and the owner table's claims."""

import math

import numpy as np
import pytest

import torch
from gwa._moments import Moments, batch_state
from gwa.torch._accumulate import EpochSums
from gwa.torch._storage import Storage


@pytest.mark.parametrize(("center", "spread"), [(0.0, 0.3), (0.5, 1e-3), (-0.9, 1e-5)])
def test_power_sums_match_the_two_pass_moments(center, spread):
    rng = np.random.default_rng(0)
    values = center + spread * rng.standard_t(5, size=1000)
    sums = EpochSums(torch.device("cpu"))
    for chunk in np.array_split(values, 7):
        t = torch.from_numpy(chunk)
        sums.add(
            t,
            torch.zeros(len(t), dtype=torch.bool),
            torch.ones(len(t), dtype=torch.bool),
            torch.zeros(len(t), dtype=torch.bool),
        )
    got, ref = Moments(sums.to_state()), Moments(batch_state(values))
    assert got.n == 1000
    assert math.isclose(got.mean, ref.mean, rel_tol=1e-13, abs_tol=1e-16)
    assert math.isclose(got.variance, ref.variance, rel_tol=1e-10)
    assert math.isclose(got.excess_kurtosis, ref.excess_kurtosis, rel_tol=1e-8)


def test_power_sums_skip_invalid_rows_and_count():
    sums = EpochSums(torch.device("cpu"))
    scores = torch.tensor([0.1, float("nan"), 0.3, 0.0, 0.7], dtype=torch.float64)
    nonfinite = scores.isnan()
    valid = ~nonfinite & torch.tensor([True, True, True, True, False])
    undefined = torch.tensor([False, False, False, True, False])
    sums.add(scores, undefined, valid, nonfinite)
    assert sums.counts.tolist() == [3, 1, 1]
    ref = Moments(batch_state([0.1, 0.3, 0.0]))
    got = Moments(sums.to_state())
    assert math.isclose(got.mean, ref.mean, rel_tol=1e-14) and math.isclose(
        got.variance, ref.variance, rel_tol=1e-12
    )


def test_first_finite_sighting_claims_the_id():
    ids = torch.tensor([3, 1, 3, 4, 4, 3, 0, 2])
    finite = torch.tensor([True, True, True, False, True, True, True, False])
    # 4's first sighting is non-finite: the next finite one claims it; 2 is only seen non-finite
    assert Storage._first_sightings(ids, finite, 5).tolist() == [
        True,
        True,
        False,
        False,
        True,
        False,
        True,
        False,
    ]
