import numpy as np
import pytest

from gwa.runner import noise


def balanced_labels(n_per_class=50, num_classes=10):
    return np.repeat(np.arange(num_classes), n_per_class)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.37, 0.9])
def test_symmetric_flips_exactly_round_rate_n_to_other_classes(rate):
    y = balanced_labels()
    noisy, mask = noise.symmetric(y, rate, 10, seed=3)
    assert mask.sum() == round(rate * y.size)
    assert np.array_equal(mask, noisy != y)  # every chosen sample really changed class
    assert noisy.min() >= 0 and noisy.max() <= 9
    assert np.array_equal(noisy[~mask], y[~mask])


def test_symmetric_is_seeded_and_targets_cover_all_other_classes():
    y = balanced_labels(200)
    a, _ = noise.symmetric(y, 0.5, 10, seed=1)
    b, _ = noise.symmetric(y, 0.5, 10, seed=1)
    c, _ = noise.symmetric(y, 0.5, 10, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # From class 0, flipped samples spread over the 9 other classes, each about 1/9 of them.
    flipped = a[(y == 0) & (a != y)]
    counts = np.bincount(flipped, minlength=10)
    assert counts[0] == 0 and (counts[1:] > 0).all()
    from scipy.stats import chisquare

    assert chisquare(counts[1:]).pvalue > 1e-3


def test_asymmetric_flips_exact_fraction_of_each_source_class_to_its_pair():
    y = balanced_labels(40)
    pairs = noise.ASYMMETRIC_PAIRS["cifar10"]
    noisy, mask = noise.asymmetric(y, 0.25, pairs, seed=0)
    for source, target in pairs.items():
        members = y == source
        assert mask[members].sum() == 10  # round(0.25 * 40)
        assert (noisy[members & mask] == target).all()
    untouched = ~np.isin(y, list(pairs))
    assert not mask[untouched].any()


def test_asymmetric_pairs_name_the_documented_classes():
    fm = noise.ASYMMETRIC_PAIRS["fashion-mnist"]
    assert fm[6] == 0 and fm[0] == 6 and fm[2] == 4 and fm[4] == 2 and fm[7] == 9 and fm[9] == 7
    c10 = noise.ASYMMETRIC_PAIRS["cifar10"]
    assert c10 == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert noise.ASYMMETRIC_PAIRS["digits"] == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
    with pytest.raises(ValueError, match="Asymmetric noise has class pairs for"):
        noise.pairs_for("imagefolder")


def test_from_file_npy_and_pt_with_key(tmp_path):
    torch = pytest.importorskip("torch")
    y = balanced_labels(5)
    file_labels = (y + 1) % 10
    file_labels[:10] = y[:10]
    np.save(tmp_path / "labels.npy", file_labels)
    noisy, mask = noise.from_file(y, tmp_path / "labels.npy", 10)
    assert np.array_equal(noisy, file_labels) and mask.sum() == y.size - 10
    # CIFAR-10-N style: a dict of numpy arrays; an index picks each sample's row.
    torch.save({"aggre_label": file_labels, "clean_label": y}, tmp_path / "human.pt")
    index = np.array([3, 0, 12])
    noisy, mask = noise.from_file(y[index], tmp_path / "human.pt", 10, key="aggre_label", index=index)
    assert np.array_equal(noisy, file_labels[index])
    with pytest.raises(ValueError, match="choose one with --noise-key"):
        noise.from_file(y, tmp_path / "human.pt", 10)
    with pytest.raises(ValueError, match="Expected --noise-key among aggre_label, clean_label; got 'worse'"):
        noise.from_file(y, tmp_path / "human.pt", 10, key="worse")


def test_bad_inputs_raise_clear_errors(tmp_path):
    y = balanced_labels(5)
    with pytest.raises(ValueError, match=r"Expected `rate` in \[0, 1\); got 1.5"):
        noise.symmetric(y, 1.5, 10, seed=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\]; got range \[0, 9\]"):
        noise.symmetric(y, 0.1, 5, seed=0)
    with pytest.raises(ValueError, match="integer class ids of shape"):
        noise.symmetric(y.astype(float), 0.1, 10, seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        noise.from_file(y, tmp_path / "missing.npy", 10)
    np.save(tmp_path / "short.npy", y[:3])
    with pytest.raises(ValueError, match="has 3 labels; the training set needs 50"):
        noise.from_file(y, tmp_path / "short.npy", 10)
    (tmp_path / "labels.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="Expected a .npy or .pt label file"):
        noise.from_file(y, tmp_path / "labels.txt", 10)
