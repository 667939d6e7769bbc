"""Per-class evidence of one epoch: the alignment's moments per given label and who the negatives look like.

Class-conditional label noise lives in a few (given label -> true class) pairs, where one global statistic washes it
out. :func:`class_evidence` condenses an epoch's per-sample alignment, given labels and the model's predictions into
a :class:`ClassEvidence`, per given label ``c``:

- ``count``, ``mean``, ``std``, ``excess_kurtosis`` of the alignment (biased moments, as :class:`gwa.Moments`);
- ``negative_share``: the share of its samples with alignment < 0 (fitted only by memorising, or not yet fitted);
- ``correct``: how many of its samples the model predicts as ``c`` (the per-class training accuracy's numerator);
- ``negative_confusion[c, k]``: how many of its negatively aligned samples the model predicts as class ``k``.
  A flipped sample (true class ``k``, given ``c``) is predicted ``k`` and negatively aligned until it is memorised;
- ``confident_confusion[c, k]``: the same count among the *confidently* aligned samples only, with alignment at
  most ``-CONFIDENT_MARGIN * scale[k]`` for predicted class ``k != c`` (off the diagonal) or at least
  ``+CONFIDENT_MARGIN * scale[c]`` (on it), where ``scale[c]`` is the mean positive alignment of class ``c``'s
  samples in the epoch. A hard clean sample sits near 0 and drops out of both sides, a flipped one looks like a
  clean one of its true class mirrored: so the ratio of the two sides estimates the noise with fewer hard clean
  samples counted (the noise map's input; per-class thresholds as in confident learning).

Samples whose score is NaN (unseen in the epoch) are skipped. The cost is O(N + C^2) per epoch (``bincount``s over
the samples; nothing per step). ``to_dict``/``from_dict`` use plain JSON values and validate what they read.

Example:
    >>> import numpy as np
    >>> ev = class_evidence([0.2, -0.2, 0.3, np.nan], labels=[0, 0, 1, 1], predictions=[0, 1, 1, 1], num_classes=2)
    >>> ev.count.tolist(), ev.negative_share.tolist(), ev.negative_confusion.tolist()
    ([2, 1], [0.5, 0.0], [[0, 1], [0, 0]])
    >>> ev.scale.tolist(), ev.confident_confusion.tolist()   # -0.2 <= -0.5 * 0.3: confidently negative
    ([0.2, 0.3], [[1, 1], [0, 1]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gwa._moments import Moments, MomentState
from gwa._validation import describe

#: Version of :meth:`ClassEvidence.to_dict`'s layout.
EVIDENCE_FORMAT = 1
#: A sample counts as confidently aligned when ``|alignment| >= CONFIDENT_MARGIN * scale`` (see the module doc);
#: set on the development runs of issue 18 (docs/noise-map.md).
CONFIDENT_MARGIN = 0.5
_FLOATS = ("mean", "std", "excess_kurtosis", "negative_share", "scale")
_VECTORS = ("count", "correct", *_FLOATS)
_TABLES = ("negative_confusion", "confident_confusion")


@dataclass(frozen=True, eq=False)
class ClassEvidence:
    """One epoch's per-class evidence (arrays indexed by the given label; see the module docstring).

    Attributes:
        count: ``(C,)`` int, samples seen per given label.
        correct: ``(C,)`` int, of them, those the model predicts as their given label.
        mean, std, excess_kurtosis: ``(C,)`` float, the alignment's moments per given label (NaN where undefined:
            no sample, or constant scores for the kurtosis).
        negative_share: ``(C,)`` float, the share with alignment < 0 (NaN for a class with no sample).
        negative_confusion: ``(C, C)`` int, negatively aligned samples by (given label, predicted class).
        confident_confusion: ``(C, C)`` int, confidently aligned samples: off the diagonal those at most
            ``-CONFIDENT_MARGIN * scale[predicted]`` by (given, predicted); on it those at least
            ``+CONFIDENT_MARGIN * scale[given]``.
        scale: ``(C,)`` float, per given label the mean of its positive scores (NaN when it has none).
    """

    count: np.ndarray
    correct: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    excess_kurtosis: np.ndarray
    negative_share: np.ndarray
    negative_confusion: np.ndarray
    confident_confusion: np.ndarray
    scale: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.count.size)

    @property
    def negative(self) -> np.ndarray:
        """``(C,)`` int, negatively aligned samples per given label."""
        return self.negative_confusion.sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN as null)."""

        def plain(v: np.ndarray) -> list:
            if v.dtype.kind == "f":
                return [None if not math.isfinite(x) else float(x) for x in v.tolist()]
            return [int(x) for x in v.tolist()]

        return {
            "format": EVIDENCE_FORMAT,
            **{k: plain(getattr(self, k)) for k in _VECTORS},
            **{k: [[int(x) for x in row] for row in getattr(self, k).tolist()] for k in _TABLES},
        }

    @classmethod
    def from_dict(cls, data: Any) -> ClassEvidence:
        """Read :meth:`to_dict`'s output back, checking every field.

        Raises:
            ValueError: for another format, a missing field, a field of the wrong length, a negative or fractional
                count, a share outside [0, 1], or confusion counts that do not fit the counts.
        """
        if not isinstance(data, dict):
            raise ValueError(f"Expected class evidence as a dict; got {type(data).__name__}.")
        if data.get("format") != EVIDENCE_FORMAT:
            raise ValueError(
                f"Expected class evidence of format {EVIDENCE_FORMAT}; got format {data.get('format')!r}."
            )
        missing = [k for k in (*_VECTORS, *_TABLES) if k not in data]
        if missing:
            raise ValueError(f"Expected class evidence with {', '.join(missing)}; they are missing.")
        count = _counts("count", data["count"])
        c = count.size
        correct = _counts("correct", data["correct"], c)
        floats = {k: _floats(k, data[k], c) for k in _FLOATS}
        confusion = _counts("negative_confusion", data["negative_confusion"], c, square=True)
        confident = _counts("confident_confusion", data["confident_confusion"], c, square=True)
        if np.any(floats["scale"] < 0):
            raise ValueError(f"Expected `scale` as numbers >= 0 (or null); got {data['scale']!r}.")
        share = floats["negative_share"]
        if np.any((share < 0) | (share > 1)):
            raise ValueError(
                f"Expected `negative_share` in [0, 1] (or null); got {data['negative_share']!r}."
            )
        if any(np.any(v > count) for v in (correct, confusion.sum(axis=1), confident.sum(axis=1))):
            raise ValueError(
                "Expected `correct` and the rows of `negative_confusion` and `confident_confusion` to sum to at most "
                f"`count` per class; got count={count.tolist()}, correct={correct.tolist()}, negative "
                f"{confusion.sum(axis=1).tolist()}, confident {confident.sum(axis=1).tolist()}."
            )
        return cls(
            count,
            correct,
            negative_confusion=confusion,
            confident_confusion=confident,
            **floats,
        )

    def __post_init__(self) -> None:
        c = np.shape(self.count)
        for k in (*_VECTORS, *_TABLES):
            v = np.array(getattr(self, k), dtype=np.float64 if k in _FLOATS else np.int64)
            expected = (c[0], c[0]) if k in _TABLES and len(c) == 1 else c
            if len(c) != 1 or v.shape != expected:
                raise ValueError(f"Expected `{k}` of shape {expected} (C = len(count)); got shape={v.shape}.")
            v.setflags(write=False)
            object.__setattr__(self, k, v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassEvidence):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, k), getattr(other, k), equal_nan=getattr(self, k).dtype.kind == "f")
            for k in (*_VECTORS, *_TABLES)
        )

    def __repr__(self) -> str:
        return (
            f"ClassEvidence(num_classes={self.num_classes}, samples={int(self.count.sum())}, "
            f"negative={int(self.negative.sum())})"
        )


def _counts(name: str, value: Any, size: int | None = None, *, square: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=object)
    shape = (size, size) if square else (size,) if size is not None else None
    ok_shape = arr.ndim == (2 if square else 1) and (shape is None or arr.shape == shape)
    ok_values = ok_shape and all(
        isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0 for x in arr.ravel()
    )
    if not ok_values:
        want = "a C x C table" if square else "a list"
        raise ValueError(
            f"Expected `{name}` as {want} of counts (integers >= 0)"
            f"{'' if shape is None else f' of shape {shape}'}; got {value!r}."
        )
    return arr.astype(np.int64)


def _floats(name: str, value: Any, size: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"Expected `{name}` as a list of {size} numbers or null; got {value!r}.")
    out = []
    for x in value:
        if x is None:
            out.append(math.nan)
        elif isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
            out.append(float(x))
        else:
            raise ValueError(f"Expected `{name}` as a list of finite numbers or null; got {value!r}.")
    return np.array(out, dtype=np.float64)


def _class_ids(name: str, value: Any, n: int, num_classes: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != (n,) or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"Expected `{name}` as integer class ids of shape ({n},); got {describe(arr)}.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"Expected `{name}` in [0, {num_classes - 1}] (num_classes={num_classes}); got range "
            f"[{arr.min()}, {arr.max()}]."
        )
    return arr


def class_evidence(scores, labels, predictions, num_classes: int) -> ClassEvidence:
    """One epoch's :class:`ClassEvidence` from per-sample alignment, given labels and predicted classes.

    Args:
        scores: ``(N,)`` alignment per sample (NaN = unseen in the epoch: skipped).
        labels: ``(N,)`` the given (possibly noisy) labels, integer class ids.
        predictions: ``(N,)`` the model's predicted class per sample (the argmax of its logits in the epoch).
        num_classes: ``C``.

    Raises:
        ValueError: for arrays of other shapes, non-integer or out-of-range class ids, infinite scores, or
            ``num_classes`` < 2.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"Expected `num_classes` to be an integer >= 2; got {num_classes!r}.")
    c = int(num_classes)
    s = np.asarray(scores)
    if s.ndim != 1 or s.dtype.kind not in "biuf":
        raise ValueError(f"Expected `scores` as real numbers of shape (N,); got {describe(s)}.")
    s = s.astype(np.float64)
    if np.isinf(s).any():
        raise ValueError(
            f"Expected finite `scores` (NaN = unseen); got {int(np.isinf(s).sum())} infinite value(s)."
        )
    y = _class_ids("labels", labels, s.size, c)
    p = _class_ids("predictions", predictions, s.size, c)
    seen = ~np.isnan(s)
    s, y, p = s[seen], y[seen], p[seen]
    count = np.bincount(y, minlength=c)
    safe = np.maximum(count, 1)
    mean = np.bincount(y, weights=s, minlength=c) / safe
    dev = s - mean[y]
    mean = mean + np.bincount(y, weights=dev, minlength=c) / safe  # corrected two-pass, as gwa.Moments
    dev = s - mean[y]
    dev2 = dev * dev
    sums = [np.bincount(y, weights=w, minlength=c) for w in (dev2, dev2 * dev, dev2 * dev2)]
    moments = [
        Moments(MomentState(float(count[k]), float(mean[k]), *(float(m[k]) for m in sums))) for k in range(c)
    ]
    negative = s < 0
    confusion = np.bincount(y[negative] * c + p[negative], minlength=c * c).reshape(c, c)
    positive = s > 0
    n_pos = np.bincount(y[positive], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(
            n_pos > 0, np.bincount(y[positive], weights=s[positive], minlength=c) / n_pos, np.nan
        )
    overall = float(s[positive].mean()) if positive.any() else 0.0
    margin = CONFIDENT_MARGIN * np.where(
        np.isfinite(scale), scale, overall
    )  # a class with no positive: overall
    low, high = (s <= -margin[p]) & negative, (s >= margin[y]) & ~negative
    confident = np.bincount(y[low] * c + p[low], minlength=c * c).reshape(c, c)
    np.fill_diagonal(confident, 0)  # a negatively aligned sample predicted as its own label is not a pair
    confident[np.diag_indices(c)] = np.bincount(y[high], minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(count > 0, confusion.sum(axis=1) / safe, np.nan)
    return ClassEvidence(
        count,
        np.bincount(y[p == y], minlength=c),
        np.array([m.mean for m in moments]),
        np.array([m.std for m in moments]),
        np.array([m.excess_kurtosis for m in moments]),
        share,
        confusion,
        confident,
        scale,
    )
