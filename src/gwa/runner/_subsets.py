"""Subsets of a dataset: the classes kept (relabelled 0..k-1) and stratified, seeded picks of rows.

``class_map`` turns ``--classes`` into a relabelling that the training set, the test set, the eval sets and the
asymmetric noise pairs all go through; ``stratified_pick`` draws the training subset and the held-out splits.
"""

from __future__ import annotations

import numpy as np

from gwa.runner._dataset import Dataset


def stratified_pick(labels: np.ndarray, size, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``arange(len(labels))`` into (kept, picked) with ``picked`` of ``size``, stratified; both sorted."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        kept, picked = train_test_split(idx, test_size=size, stratify=labels, random_state=seed)
    except ValueError as exc:  # a class too small to stratify
        raise ValueError(
            f"Cannot draw a stratified {what} of {size} from {len(labels)} samples: {exc}"
        ) from None
    return np.sort(kept), np.sort(picked)


def class_map(classes, num_classes: int, dataset: str) -> np.ndarray | None:
    """Original class id -> new id (0..k-1 in the order given), -1 for a dropped class; None = keep all."""
    if classes is None:
        return None
    out_of_range = [k for k in classes if k >= num_classes]
    if out_of_range:
        raise ValueError(
            f"Expected `classes` to be class ids in [0, {num_classes - 1}] ({dataset} has {num_classes} "
            f"classes); got {list(classes)}."
        )
    relabel = np.full(num_classes, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return relabel


def _kept_rows(y: np.ndarray, relabel: np.ndarray) -> np.ndarray:
    keep = (y >= 0) & (y < relabel.size)
    keep[keep] = relabel[y[keep]] >= 0
    return np.flatnonzero(keep)


def relabelled(x: np.ndarray, y: np.ndarray, relabel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = _kept_rows(y, relabel)
    return x[rows], relabel[y[rows]]


def keep_classes(ds: Dataset, relabel: np.ndarray, classes) -> tuple[Dataset, np.ndarray]:
    """The dataset restricted to ``classes`` (train and test, relabelled) and the original rows of its
    training samples."""
    rows = _kept_rows(ds.y_train, relabel)
    x_test, y_test = relabelled(ds.x_test, ds.y_test, relabel)
    names = tuple(ds.classes[k] for k in classes)
    return Dataset(ds.name, ds.x_train[rows], relabel[ds.y_train[rows]], x_test, y_test, names), rows


def pairs_within(pairs: dict[int, int], relabel: np.ndarray, classes) -> dict[int, int]:
    """The asymmetric flips whose source and target both lie in ``classes``, in the new class ids."""
    kept = {int(relabel[s]): int(relabel[t]) for s, t in pairs.items() if relabel[s] >= 0 and relabel[t] >= 0}
    if not kept:
        raise ValueError(
            f"Asymmetric noise needs a class pair inside `classes`; got classes={list(classes)} and the pairs "
            f"{pairs} (source: target)."
        )
    return kept
