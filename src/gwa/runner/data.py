"""Datasets as numpy arrays, and the prepared data one run trains on (subset, label noise, validation split).

Inputs are float32: images channels-last ``(N, H, W, C)`` in [0, 1] before normalisation, 1-D signals ``(N, L)``.
Labels are int64 class ids. Nothing is downloaded unless the user asks (``--download``, CIFAR-10 only).

This module is the entry point (``load_dataset``, ``prepare``); the loaders live by job in private modules and are
re-exported here: :mod:`gwa.runner._builtin_datasets` (digits, MNIST-1D), :mod:`gwa.runner._dataset_files`
(Fashion-MNIST, CIFAR-10, image folders, eval sets) and :mod:`gwa.runner._subsets` (classes, stratified picks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gwa.runner import _subsets as subsets
from gwa.runner import noise as noise_lib
from gwa.runner._builtin_datasets import SPLIT_SEED, load_digits, load_mnist1d
from gwa.runner._dataset import Dataset
from gwa.runner._dataset_files import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIRS,
    IDX_DTYPES,
    IMAGE_SUFFIXES,
    default_fashion_mnist_dir,
    load_cifar10,
    load_eval_set,
    load_fashion_mnist,
    load_imagefolder,
    read_idx,
)

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "IDX_DTYPES",
    "IMAGE_SUFFIXES",
    "SPLIT_SEED",
    "Dataset",
    "PreparedData",
    "default_fashion_mnist_dir",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_eval_set",
    "load_fashion_mnist",
    "load_imagefolder",
    "load_mnist1d",
    "prepare",
    "read_idx",
]


def load_dataset(name: str, *, data_dir=None, download: bool = False, mnist1d_samples: int = 5000) -> Dataset:
    """The dataset ``gwa train --dataset NAME`` names, un-normalised.

    ``prepare`` calls it through this module's namespace, so a cache put here (``gwa bench``'s workers) applies.
    """
    if name == "digits":
        return load_digits()
    if name == "mnist1d":
        return load_mnist1d(mnist1d_samples)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir, download=download)
    if name == "imagefolder":
        return load_imagefolder(data_dir)
    raise ValueError(
        f"Expected `dataset` to be one of digits, mnist1d, fashion-mnist, cifar10, imagefolder; got {name!r}."
    )


# ---------------------------------------------------------------------------------------------- one run's data


@dataclass
class PreparedData:
    """What a backend trains on. Inputs are normalised; ``raw(x)`` undoes it (for previews).

    Sample ids are the row indices of ``x_train`` (0..N-1); ``source_index[i]`` is sample i's row in the
    dataset's original training set.
    """

    x_train: np.ndarray
    y_train: np.ndarray  # labels used for training (noisy)
    y_train_clean: np.ndarray
    noise_mask: np.ndarray
    source_index: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None  # noisy, like training
    y_val_clean: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    noise_pairs: dict[int, int] | None = None  # asymmetric noise: the flips used (source -> target class id)

    @property
    def realised_noise_rate(self) -> float:
        """The share of training labels the noise changed (asymmetric 0.3 flips 30% of the paired classes only)."""
        return noise_lib.realised_rate(self.noise_mask)

    # The veto split (--veto-frac): noisy labels like training; its accuracy only chooses among gwa's candidates.
    x_veto: np.ndarray | None = None
    y_veto: np.ndarray | None = None
    y_veto_clean: np.ndarray | None = None
    source_size: int | None = None  # rows of the source training set (what source_index indexes)

    @property
    def num_samples(self) -> int:
        return len(self.y_train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4

    def raw(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


def prepare(config) -> PreparedData:
    """Load ``config.dataset``, take the subset, inject label noise, hold out validation, normalise."""
    ds = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        mnist1d_samples=config.mnist1d_samples,
    )
    relabel = subsets.class_map(config.classes, len(ds.classes), ds.name)
    original_rows = np.arange(len(ds.y_train))
    source_size = len(ds.y_train)
    if relabel is not None:
        ds, original_rows = subsets.keep_classes(ds, relabel, config.classes)
    n_classes = len(ds.classes)
    index = np.arange(len(ds.y_train))
    if config.num_train is not None:
        if config.num_train > len(index):
            raise ValueError(
                f"Expected `num_train` <= {len(index)} (the size of {ds.name}'s training set"
                f"{'' if relabel is None else ' in `classes`'}); got {config.num_train}."
            )
        if config.num_train < len(index):
            _, index = subsets.stratified_pick(ds.y_train, config.num_train, config.seed, "training subset")
    clean = ds.y_train[index]
    pairs: dict[int, int] | None = None
    if config.noise == "symmetric":
        noisy, mask = noise_lib.symmetric(clean, config.noise_rate, n_classes, seed=config.seed)
    elif config.noise == "asymmetric":
        pairs = noise_lib.pairs_for(config.dataset)
        if relabel is not None:
            pairs = subsets.pairs_within(pairs, relabel, config.classes)
        noisy, mask = noise_lib.asymmetric(clean, config.noise_rate, pairs, seed=config.seed)
    elif config.noise == "instance":
        probs = noise_lib.reference_probabilities(ds.x_train[index], clean, n_classes, seed=config.seed)
        noisy, mask = noise_lib.instance_dependent(clean, config.noise_rate, probs, seed=config.seed)
    elif config.noise == "file":
        noisy, mask = noise_lib.from_file(
            clean, config.noise_file, n_classes, key=config.noise_key, index=index
        )
    else:
        noisy, mask = clean.copy(), np.zeros(clean.shape, dtype=bool)
    x = ds.x_train[index]
    n_before_splits = len(index)
    x_val = y_val = y_val_clean = None
    if config.val_frac > 0:
        train_rows, val_rows = subsets.stratified_pick(
            noisy, config.val_frac, config.seed, "validation split"
        )
        x_val, y_val, y_val_clean = x[val_rows], noisy[val_rows], clean[val_rows]
        x, noisy, clean, mask, index = (a[train_rows] for a in (x, noisy, clean, mask, index))
    x_veto = y_veto = y_veto_clean = None
    if config.veto_frac > 0:  # a fraction of the whole training set, drawn after the validation split
        size = round(config.veto_frac * n_before_splits)
        train_rows, veto_rows = subsets.stratified_pick(
            noisy, size, config.seed + 1, "veto split (--veto-frac)"
        )
        x_veto, y_veto, y_veto_clean = x[veto_rows], noisy[veto_rows], clean[veto_rows]
        x, noisy, clean, mask, index = (a[train_rows] for a in (x, noisy, clean, mask, index))
    # Normalise with the training inputs' statistics: per channel for images, one scalar for 1-D signals.
    axes = tuple(range(x.ndim - 1)) if x.ndim == 4 else tuple(range(x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64).astype(np.float32)
    std = np.maximum(x.std(axis=axes, dtype=np.float64), 1e-6).astype(np.float32)

    def norm(a):
        return None if a is None else ((a - mean) / std).astype(np.float32)

    eval_sets = {
        name: load_eval_set(name, path, ds.input_shape, len(ds.classes) if relabel is None else relabel.size)
        for name, path in config.eval_sets.items()
    }
    if relabel is not None:
        eval_sets = {name: subsets.relabelled(xe, ye, relabel) for name, (xe, ye) in eval_sets.items()}
    return PreparedData(
        x_train=norm(x),
        y_train=noisy,
        y_train_clean=clean,
        noise_mask=mask,
        noise_pairs=pairs,
        source_index=original_rows[index],
        x_val=norm(x_val),
        y_val=y_val,
        y_val_clean=y_val_clean,
        x_test=norm(ds.x_test),
        y_test=ds.y_test,
        classes=ds.classes,
        mean=mean,
        std=std,
        eval_sets={k: (norm(xe), ye) for k, (xe, ye) in eval_sets.items()},
        x_veto=norm(x_veto),
        y_veto=y_veto,
        y_veto_clean=y_veto_clean,
        source_size=source_size,
    )
