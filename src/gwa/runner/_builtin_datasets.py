"""The datasets that need no files: scikit-learn's digits (shipped with it) and MNIST-1D (generated)."""

from __future__ import annotations

import random

import numpy as np

from gwa.runner._dataset import Dataset

#: The train/test split of embedded datasets (digits) is fixed, so runs with different seeds share a test set.
SPLIT_SEED = 0


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with sklearn), 70/30 stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=SPLIT_SEED)
    return Dataset("digits", xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


def load_mnist1d(num_samples: int = 5000) -> Dataset:
    """MNIST-1D from its generator (never its download), with the package's default arguments and seed."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    # The generator seeds numpy's and Python's global RNGs; keep the caller's streams untouched.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 - the global stream itself
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return Dataset(
        "mnist1d",
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
        tuple(str(i) for i in range(10)),
    )
