"""Label-noise injection: symmetric, asymmetric class-pair flips, or labels read from a file (CIFAR-10-N).

Every function returns ``(noisy_labels, mask)`` with ``mask = noisy_labels != clean_labels``, both ``(N,)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gwa.runner.inputs import class_ids

#: Asymmetric flips (source class -> target class) per label space, as in Patrini et al. 2017 / Han et al. 2018.
ASYMMETRIC_PAIRS = {
    # T-shirt(0) <-> shirt(6), pullover(2) <-> coat(4), sneaker(7) <-> ankle boot(9)
    "fashion-mnist": {6: 0, 0: 6, 2: 4, 4: 2, 7: 9, 9: 7},
    # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    # digits look-alikes: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
}
ASYMMETRIC_PAIRS["mnist1d"] = ASYMMETRIC_PAIRS["digits"]
CIFAR10N_KEYS = (
    "aggre_label",
    "random_label1",
    "random_label2",
    "random_label3",
    "worse_label",
    "clean_label",
)


def _check_labels(labels, num_classes: int | None, where: str = "`labels`") -> np.ndarray:
    return class_ids(labels, num_classes, where)


def symmetric(labels, rate: float, num_classes: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move exactly ``round(rate * N)`` samples, chosen uniformly, to a uniformly random *other* class."""
    y = _check_labels(labels, num_classes)
    if not 0 <= rate < 1:
        raise ValueError(f"Expected `rate` in [0, 1); got {rate!r}.")
    if num_classes < 2:
        raise ValueError(f"Expected `num_classes` >= 2; got {num_classes}.")
    rng = np.random.default_rng(seed)
    flip = rng.choice(y.size, size=round(rate * y.size), replace=False)
    noisy = y.copy()
    # An offset in 1..C-1 added modulo C is uniform over the other classes.
    noisy[flip] = (y[flip] + rng.integers(1, num_classes, size=flip.size)) % num_classes
    return noisy, noisy != y


def asymmetric(labels, rate: float, pairs: dict[int, int], *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """In each source class of ``pairs``, move exactly ``round(rate * n_class)`` samples to its target class."""
    y = _check_labels(labels, None)
    if not 0 <= rate < 1:
        raise ValueError(f"Expected `rate` in [0, 1); got {rate!r}.")
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    for source in sorted(pairs):
        members = np.flatnonzero(y == source)  # chosen among the clean labels: a flipped 2->7 stays 7
        flip = rng.choice(members, size=round(rate * members.size), replace=False)
        noisy[flip] = pairs[source]
    return noisy, noisy != y


def realised_rate(mask) -> float:
    """The share of training labels that differ from the clean ones: what the noise did, not what was asked.

    Asymmetric noise flips ``rate`` of each *source class* of the pairs only, so on Fashion-MNIST ``0.3`` flips
    18% of all labels (6 of 10 classes are sources); symmetric noise flips ``rate`` of all samples.
    """
    m = np.asarray(mask, dtype=bool)
    return float(m.mean()) if m.size else 0.0


def describe_realised(
    kind: str,
    rate: float,
    mask,
    *,
    pairs: dict[int, int] | None = None,
    class_names=None,
    source: str | None = None,
) -> str:
    """One line for the user: the noise asked for, the share of labels it flipped, and how it chose them."""
    m = np.asarray(mask, dtype=bool)
    share = f"{realised_rate(m):.1%} of the {m.size:,} training labels"
    done = f"flipped {share}"
    if kind == "symmetric":
        return f"label noise: symmetric {rate:g} {done} (each to a uniformly random other class)"
    if kind == "asymmetric":

        def name(k: int) -> str:
            return str(class_names[k]) if class_names is not None and k < len(class_names) else str(k)

        flips = ", ".join(f"{name(s)}->{name(t)}" for s, t in sorted((pairs or {}).items()))
        return (
            f"label noise: asymmetric {rate:g} {done} (only the paired classes flip, {rate:.0%} of each "
            f"source class: {flips})"
        )
    if kind == "file":
        return (
            f"label noise: the labels of {source or 'the label file'} differ from the clean ones on {share}"
        )
    return f"label noise: none ({m.size:,} training labels as given)"


def pairs_for(dataset: str) -> dict[int, int]:
    try:
        return ASYMMETRIC_PAIRS[dataset]
    except KeyError:
        raise ValueError(
            f"Asymmetric noise has class pairs for {', '.join(sorted(ASYMMETRIC_PAIRS))}; "
            f"got dataset={dataset!r} (use noise 'symmetric' or 'file')."
        ) from None


def load_label_file(path, *, key: str | None = None) -> np.ndarray:
    """Labels from a ``.npy`` array or a ``.pt`` dict such as CIFAR-10-N's ``CIFAR-10_human.pt``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Label file {path} does not exist (--noise-file).")
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)  # never a pickle: object arrays are refused
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"Cannot read label file {path} as a numeric .npy array: {exc}.") from None
    elif path.suffix in (".pt", ".pth"):
        from gwa.runner.safe_pickle import torch_load_arrays

        # CIFAR-10_human.pt is a dict of numpy arrays, downloaded from the internet: admit arrays, run nothing.
        obj = torch_load_arrays(path)
        if isinstance(obj, dict):
            if key is None and len(obj) == 1:
                key = next(iter(obj))  # one label set: nothing to choose
            if key is None:
                raise ValueError(
                    f"{path.name} holds {len(obj)} label sets; choose one with --noise-key "
                    f"({', '.join(str(k) for k in obj)})."
                )
            if key not in obj:
                raise ValueError(f"Expected --noise-key among {', '.join(str(k) for k in obj)}; got {key!r}.")
            obj = obj[key]
        elif key is not None:
            raise ValueError(
                f"{path.name} holds one label array, not a dict of label sets; got --noise-key {key!r} "
                "(drop it)."
            )
        labels = obj.numpy() if hasattr(obj, "numpy") else np.asarray(obj)
    else:
        raise ValueError(f"Expected a .npy or .pt label file; got {path.name!r}.")
    if path.suffix == ".npy" and key is not None:
        raise ValueError(f"{path.name} is one .npy label array; got --noise-key {key!r} (drop it).")
    # Range-checked on the values as stored: uint64 2**64-1 is refused as itself, not as -1 after a cast.
    return _check_labels(labels, None, f"the labels in {path.name} (--noise-file)")


def from_file(labels, path, num_classes: int, *, key: str | None = None, index=None):
    """Replace ``labels`` with those in a file; ``index`` maps each sample to its row in the file."""
    y = _check_labels(labels, num_classes)
    file_labels = load_label_file(path, key=key)
    rows = np.arange(y.size) if index is None else np.asarray(index)
    if rows.size and rows.max() >= file_labels.size:
        raise ValueError(
            f"{Path(path).name} has {file_labels.size} labels; the training set needs "
            f"{rows.max() + 1} (is it the label file of this dataset?)."
        )
    noisy = _check_labels(file_labels[rows], num_classes, f"the labels in {Path(path).name} (--noise-file)")
    return noisy, noisy != y


# --- instance-dependent noise (issue 19) ---------------------------------------------------------------------------
#: Principal components and folds of the reference model that decides which samples are hard and what they look like.
REFERENCE_COMPONENTS = 32
REFERENCE_FOLDS = 2


def reference_probabilities(x, labels, num_classes: int, *, seed: int) -> np.ndarray:
    """``(N, C)`` out-of-fold class probabilities of a linear reference model trained on the *clean* labels.

    Multinomial logistic regression on the first :data:`REFERENCE_COMPONENTS` principal components of the inputs,
    :data:`REFERENCE_FOLDS`-fold cross-validated (stratified, shuffled with ``seed``), so that each sample's
    probabilities come from a model that did not see it. Deterministic for a seed.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = _check_labels(labels, num_classes)
    flat = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    if len(flat) != y.size:
        raise ValueError(f"Expected one input per label; got {len(flat)} inputs and {y.size} labels.")
    components = min(REFERENCE_COMPONENTS, flat.shape[1], y.size - 1)
    features = PCA(n_components=components, svd_solver="full").fit_transform(flat - flat.mean(axis=0))
    features /= max(float(features[:, 0].std()), 1e-12)
    probs = np.zeros((y.size, num_classes))
    folds = StratifiedKFold(n_splits=REFERENCE_FOLDS, shuffle=True, random_state=seed)
    for train, held in folds.split(features, y):
        model = LogisticRegression(max_iter=300).fit(features[train], y[train])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return probs


def instance_dependent(labels, rate: float, probs, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance-dependent noise: flip exactly ``round(rate * N)`` samples, drawn without replacement with a
    probability proportional to their difficulty (``1 - p(clean label)`` under the reference model ``probs``),
    each to the *other* class the reference model finds most likely: the class it is confused with.

    The standard synthetic stand-in for human label noise (Chen et al., AAAI 2021; Xia et al., NeurIPS 2020): hard
    samples are mislabelled more often, and towards the classes they resemble, so the flips concentrate on the
    confusable pairs without a fixed pair table. ``probs`` is ``(N, C)``, e.g. :func:`reference_probabilities`.
    """
    y = _check_labels(labels, None)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.size or p.shape[1] < 2 or (y.size and y.max() >= p.shape[1]):
        raise ValueError(
            f"Expected `probs` of shape (N, C) = ({y.size}, C >= {max(2, int(y.max(initial=0)) + 1)}); "
            f"got {p.shape}."
        )
    if not 0 <= rate < 1:
        raise ValueError(f"Expected `rate` in [0, 1); got {rate!r}.")
    rows = np.arange(y.size)
    other = p.copy()
    other[rows, y] = -np.inf
    target = other.argmax(axis=1)
    # A small floor keeps every sample drawable (rng.choice needs as many non-zero weights as draws).
    difficulty = np.clip(1.0 - p[rows, y], 0.0, 1.0) + 1e-6
    rng = np.random.default_rng(seed)
    flip = rng.choice(y.size, size=round(rate * y.size), replace=False, p=difficulty / difficulty.sum())
    noisy = y.copy()
    noisy[flip] = target[flip]
    return noisy, noisy != y
