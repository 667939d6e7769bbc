"""The label-noise rate estimated from per-sample alignment, on synthetic bimodal and unimodal score matrices."""

import numpy as np
import pytest

from gwa import policy


def _bimodal(rng, n_clean, n_noisy, epochs=6, clean=0.06, noisy=-0.05, sd=0.015):
    return np.concatenate(
        [rng.normal(clean, sd, (epochs, n_clean)), rng.normal(noisy, sd, (epochs, n_noisy))], axis=1
    )


def test_negative_share_counts_samples_with_negative_mean_alignment():
    m = np.array(
        [[0.2, -0.1, 0.3, np.nan, -0.4], [0.1, -0.3, -0.5, np.nan, 0.1], [0.0, 0.2, 0.1, np.nan, np.nan]]
    )
    # per-sample means over seen epochs: 0.1, -0.0667, -0.0333, (unseen), -0.15 -> 3 of 4 seen are negative
    est = policy.estimate_noise_rate(m)
    assert est.method == "negative_share" and est.n_samples == 4
    assert est.rate == pytest.approx(0.75)
    assert est.low_mean == pytest.approx(np.mean([-0.2 / 3, -0.1 / 3, -0.15]))
    assert est.high_mean == pytest.approx(0.1)
    assert np.isnan(est.separation)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.4])
def test_both_methods_recover_the_share_of_a_separated_negative_mode(rng, rate):
    n = 2000
    m = _bimodal(rng, int(n * (1 - rate)), int(n * rate))
    share = policy.estimate_noise_rate(m)
    mix = policy.estimate_noise_rate(m, method="mixture")
    assert share.rate == pytest.approx(rate, abs=0.005)
    assert mix.rate == pytest.approx(rate, abs=0.01)
    assert mix.low_mean == pytest.approx(-0.05, abs=0.005) and mix.high_mean == pytest.approx(0.06, abs=0.005)
    assert mix.separation > 10


def test_mixture_says_zero_for_one_positive_mode_where_the_share_counts_its_tail(rng):
    m = rng.normal(0.03, 0.03, (5, 3000))  # per-sample means ~ N(0.03, 0.013): ~1% below 0
    assert policy.estimate_noise_rate(m, method="mixture").rate == 0.0
    share = policy.estimate_noise_rate(m).rate
    assert 0.0 < share < 0.03


def test_constant_and_degenerate_inputs():
    assert policy.estimate_noise_rate(np.full((3, 10), 0.1), method="mixture").rate == 0.0
    assert policy.estimate_noise_rate(np.full((3, 10), -0.1)).rate == 1.0
    with pytest.raises(ValueError, match="at least one sample"):
        policy.estimate_noise_rate(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        policy.estimate_noise_rate(np.zeros(5))
    with pytest.raises(ValueError, match="method"):
        policy.estimate_noise_rate(np.zeros((2, 2)), method="gmm")
