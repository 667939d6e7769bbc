"""Instance-dependent label noise: exact rate, flips towards the confused class, concentrated on hard samples,
deterministic per seed; and its reference model on real data (digits)."""

import numpy as np
import pytest

from gwa.runner import noise


def _reference(n_per_class=100, seed=0):
    """Hand-built reference probabilities over 4 classes: classes 0 and 1 confuse each other (p(clean) 0.5-0.9),
    classes 2 and 3 are easy (p(clean) 0.99) and lean towards 3 and 2."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    probs = np.zeros((labels.size, 4))
    for i, y in enumerate(labels):
        if y in (0, 1):
            p = rng.uniform(0.5, 0.9)
            probs[i, y], probs[i, 1 - y] = p, 0.9 * (1 - p)
            probs[i, 2] = probs[i, 3] = 0.05 * (1 - p)
        else:
            probs[i, y], probs[i, 5 - y], probs[i, 0], probs[i, 1] = 0.99, 0.008, 0.001, 0.001
    return labels, probs


def test_exact_rate_and_flips_towards_the_confused_class():
    labels, probs = _reference()
    noisy, mask = noise.instance_dependent(labels, 0.2, probs, seed=3)
    assert mask.sum() == 80 and np.array_equal(mask, noisy != labels)
    # every flip goes to the other class the reference finds most likely
    pairs = {(int(a), int(b)) for a, b in zip(labels[mask], noisy[mask])}
    assert pairs <= {(0, 1), (1, 0), (2, 3), (3, 2)}
    # difficulty 0.1-0.5 against 0.01: nearly every flip falls on the confusable classes 0 and 1
    assert np.isin(labels[mask], (0, 1)).mean() > 0.95


def test_harder_samples_flip_more_often():
    labels, probs = _reference(n_per_class=500, seed=1)
    hard_pair = labels < 2
    difficulty = 1 - probs[np.arange(labels.size), labels]
    hardest = hard_pair & (difficulty > 0.4)
    easiest = hard_pair & (difficulty < 0.2)
    share = np.mean([noise.instance_dependent(labels, 0.2, probs, seed=s)[1] for s in range(20)], axis=0)
    # probability proportional to difficulty: the hardest tenth of pair samples (0.4-0.5) flips more than
    # twice as often as the easiest (0.1-0.2)
    assert share[hardest].mean() > 2 * share[easiest].mean()


def test_deterministic_per_seed():
    labels, probs = _reference()
    a = noise.instance_dependent(labels, 0.3, probs, seed=5)[0]
    assert np.array_equal(a, noise.instance_dependent(labels, 0.3, probs, seed=5)[0])
    assert not np.array_equal(a, noise.instance_dependent(labels, 0.3, probs, seed=6)[0])


def test_bad_inputs_name_the_argument():
    labels, probs = _reference()
    with pytest.raises(
        ValueError, match=r"Expected `probs` of shape \(N, C\) = \(400, C >= 4\); got \(400, 3\)"
    ):
        noise.instance_dependent(labels, 0.2, probs[:, :3], seed=0)
    with pytest.raises(ValueError, match=r"Expected `rate` in \[0, 1\); got 1.2"):
        noise.instance_dependent(labels, 1.2, probs, seed=0)


@pytest.mark.slow
def test_reference_model_on_digits_concentrates_flips_on_confusable_pairs():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    probs = noise.reference_probabilities(x, y, 10, seed=0)
    assert probs.shape == (y.size, 10) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == y).mean() > 0.85  # out-of-fold, so not memorised
    assert np.array_equal(probs, noise.reference_probabilities(x, y, 10, seed=0))
    noisy, mask = noise.instance_dependent(y, 0.2, probs, seed=0)
    assert abs(mask.mean() - 0.2) < 0.5 / y.size + 1e-12
    pair_counts = np.zeros((10, 10), int)
    np.add.at(pair_counts, (y[mask], noisy[mask]), 1)
    # symmetric noise would spread each class's flips over 9 targets (top 10 of 90 pairs ~ 11% + chance);
    # instance-dependent flips follow the reference model's confusions: the top 10 pairs hold most of them
    top10 = np.sort(pair_counts.ravel())[::-1][:10].sum()
    assert top10 / mask.sum() > 0.4


def test_gwa_train_accepts_instance_noise():
    from gwa.runner.config import RunConfig
    from gwa.runner.data import prepare

    config = RunConfig(dataset="digits", num_train=500, noise="instance", noise_rate=0.2, seed=4)
    data = prepare(config)
    assert data.noise_mask.sum() == 100 and np.array_equal(
        data.y_train != data.y_train_clean, data.noise_mask
    )
    with pytest.raises(ValueError, match="Expected `noise_rate` > 0 with noise='instance'"):
        RunConfig(dataset="digits", noise="instance")
