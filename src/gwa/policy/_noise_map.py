"""The noise map of one run: how many labels look wrong, in which classes, and which classes look swapped.

From the per-class evidence of the epochs where the model has learned the data but not yet memorised its flipped
labels (:func:`noise_map_window`), :func:`estimate_noise_map` reads, per given label ``c`` and predicted class
``k``, the share ``Q[c, k]`` of class ``c``'s *confidently* aligned samples that are negatively aligned and predicted
``k`` (:attr:`gwa.ClassEvidence.confident_confusion`, counts summed over the window's epochs). A flipped sample (true
class ``k``, given ``c``) is such a sample until it is memorised; a hard clean sample sits near 0 and is left out of
both sides of the ratio, so that clean data reads near 0 (the plain negative share reads 9-12% there):

- ``pairs``: the cells with ``Q[c, k] >= PAIR_MIN_RATE`` that also stand out in their row (at least
  :data:`PAIR_STANDOUT` times ``per_class[c] / (C - 1)``): the off-diagonal of an estimated transition matrix, read
  as "labels ``c`` here are often really ``k``", as ``[given, likely_true, rate]`` rows, largest first;
- ``per_class``: ``sum_k Q[c, k]``;
- ``rate``: the count-weighted mean of ``per_class``;
- ``concentration``: the share of the off-diagonal mass that lies in ``pairs`` (near 0 for symmetric noise, near 1
  for class-pair noise): what the ``class_conditional`` diagnostic reads.

A run's map (:func:`noise_map_of_run`) *abstains* (``reliable=False`` with a ``reason``; no diagnostic reads it)
when the run cannot tell flipped labels from hard clean samples yet: a run of fewer than 10 planned epochs (its
warm-up, a tenth of the run, skips no epoch of the early transient; the window itself ends past it), the model
leaves more than :data:`MAX_UNEXPLAINED` of the samples neither fitted nor counted as noise at the window's end
(under-fitted), a class has fewer than :data:`MIN_CLASS_COUNT` samples, or the map is *ambiguous*: more than
:data:`MAX_AMBIGUOUS` of the window's samples are negatively aligned without being counted on either side of the
ratio (hard clean samples or unconfidently fitted noise: the map cannot tell which, and on the development runs
its rate was then off by 4-20 points). An ambiguous map keeps its pairs and concentration: the
``class_conditional`` diagnostic still reads where the misfit concentrates (:func:`is_ambiguous`).

Example:
    >>> import numpy as np
    >>> from gwa import class_evidence
    >>> y = np.repeat(np.arange(3), 100); pred = y.copy(); pred[:30] = 1   # 30 of class 0 look like class 1
    >>> s = np.where(pred != y, -0.05, 0.06)   # the flipped ones mirror the clean ones
    >>> nm = estimate_noise_map(class_evidence(s, y, pred, 3))
    >>> round(nm.rate, 2), nm.per_class.round(2).tolist(), nm.pairs
    (0.1, [0.3, 0.0, 0.0], ((0, 1, 0.3),))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gwa._class_evidence import ClassEvidence
from gwa.policy._criteria import Entry, as_rows, choose, series, warmup_epochs

#: A (given, predicted) cell holding at least this share of its given class counts as a swapped pair ...
PAIR_MIN_RATE = 0.08
#: ... when it also holds at least this many times its class's mean off-diagonal cell (``per_class[c] / (C - 1)``):
#: symmetric noise spreads evenly, so with few classes or much noise its cells pass ``PAIR_MIN_RATE`` by chance.
PAIR_STANDOUT = 2.0
#: The ``class_conditional`` diagnostic fires when the pairs hold at least this share of the off-diagonal mass.
#: Chosen on the 45 development runs to separate the runs where the default lost > 2 points to a noisy split
#: (recall minus false-firing rate; 0.5 before). With one model family left out the other two choose 0.10, 0.10
#: and, without MNIST-1D, 0.50: the value rests on MNIST-1D's weakly concentrated pairs (docs/noise-map.md).
CONCENTRATION_ALARM = 0.1
#: The ``pair_aware`` flag rule's concentration (the alarm before issue 18's follow-up; its flags were measured so).
PAIR_FLAG_CONCENTRATION = 0.5
#: Training-accuracy gap that marks an epoch as part of the early transient (as :data:`TRANSIENT_ACC_GAP`).
_TRANSIENT_GAP = 0.15
#: A run's map abstains when more than this share of the samples is neither fitted (training accuracy) nor counted
#: as noise at the window's end: the model has not learned the clean samples yet (the development runs: <= 0.21).
MAX_UNEXPLAINED = 0.25
#: ... or when a class has fewer samples per epoch than this (too few for a per-class share).
MIN_CLASS_COUNT = 20
#: ... or when more than this share of the window's samples is negatively aligned but not confidently off the
#: diagonal (:func:`ambiguous_share`). Chosen on the 45 development runs as the largest value whose reliable runs
#: read within 3 points on average (in-sample 0.085; left-one-family-out 0.05-0.10: docs/noise-map.md).
MAX_AMBIGUOUS = 0.085
#: The start of an ambiguous map's ``reason`` (:func:`is_ambiguous`).
AMBIGUOUS_REASON = "ambiguous:"


@dataclass(frozen=True, eq=False)
class NoiseMap:
    """An estimated label-noise map (see the module docstring).

    Attributes:
        rate: overall share of labels that look wrong, in [0, 1].
        per_class: ``(C,)`` per given label.
        pairs: ``((given, likely_true, rate), ...)``, largest rate first.
        concentration: share of the off-diagonal mass in ``pairs`` (0 when there is none).
        count: ``(C,)`` samples per given label the estimate rests on.
        window: the epochs (1-based, inclusive) it averaged, or None for a single evidence record.
        reliable: False when the run cannot tell noise from hard samples yet (the map abstains; see the module
            docstring): its numbers are then no estimate and no diagnostic reads them.
        reason: why it abstains ("" when reliable).
    """

    rate: float
    per_class: np.ndarray
    pairs: tuple[tuple[int, int, float], ...]
    concentration: float
    count: np.ndarray
    window: tuple[int, int] | None = None
    reliable: bool = True
    reason: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.per_class.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: ``summary.json``'s ``noise_estimate``."""
        return {
            "rate": round(float(self.rate), 6),
            "per_class": [round(float(x), 6) for x in self.per_class],
            "pairs": [[int(g), int(t), round(float(r), 6)] for g, t, r in self.pairs],
            "concentration": round(float(self.concentration), 6),
            "count": [int(x) for x in self.count],
            "window": None if self.window is None else [int(self.window[0]), int(self.window[1])],
            "reliable": bool(self.reliable),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Any) -> NoiseMap:
        """Read :meth:`to_dict`'s output back, checking every field ("Expected X; got Y")."""
        if not isinstance(data, Mapping):
            raise ValueError(f"Expected a noise estimate as a dict; got {type(data).__name__}.")
        missing = [k for k in ("rate", "per_class", "pairs", "concentration", "count") if k not in data]
        if missing:
            raise ValueError(f"Expected a noise estimate with {', '.join(missing)}; they are missing.")
        rate = _share("rate", data["rate"])
        per_class = data["per_class"]
        if not isinstance(per_class, list) or not per_class:
            raise ValueError(f"Expected `per_class` as a non-empty list of shares; got {per_class!r}.")
        shares = np.array([_share("per_class", x) for x in per_class])
        c = shares.size
        count = data["count"]
        if not (
            isinstance(count, list)
            and len(count) == c
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in count)
        ):
            raise ValueError(f"Expected `count` as a list of {c} integers >= 0; got {count!r}.")
        pairs = []
        for row in data["pairs"] if isinstance(data["pairs"], list) else [data["pairs"]]:
            ok = (
                isinstance(row, list)
                and len(row) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < c for x in row[:2])
                and row[0] != row[1]
            )
            if not ok:
                raise ValueError(
                    f"Expected each of `pairs` as [given, likely_true, rate] with two different class ids in "
                    f"[0, {c - 1}]; got {row!r}."
                )
            pairs.append((row[0], row[1], _share("pairs rate", row[2])))
        window = data.get("window")
        if window is not None and not (
            isinstance(window, list)
            and len(window) == 2
            and all(isinstance(x, int) and x >= 1 for x in window)
        ):
            raise ValueError(f"Expected `window` as [first, last] epochs (>= 1) or null; got {window!r}.")
        reliable, reason = (
            data.get("reliable", True),
            data.get("reason", ""),
        )  # absent in summaries before 0.3
        if not isinstance(reliable, bool) or not isinstance(reason, str):
            raise ValueError(
                f"Expected `reliable` as true/false and `reason` as text; got {reliable!r} and {reason!r}."
            )
        return cls(
            rate,
            shares,
            tuple(pairs),
            _share("concentration", data["concentration"]),
            np.array(count, dtype=np.int64),
            None if window is None else (window[0], window[1]),
            reliable,
            reason,
        )

    def describe(self, class_names: Sequence[str] | None = None, *, max_pairs: int = 4) -> str:
        """One line for a CLI: ``noise map: ~22% of labels look wrong; swapped: shirt -> T-shirt (31%), ...``."""

        def name(k: int) -> str:
            return str(class_names[k]) if class_names is not None and k < len(class_names) else str(k)

        if not self.reliable:
            return f"noise map: not enough evidence yet ({self.reason})"
        head = f"noise map: ~{self.rate:.0%} of labels look wrong"
        if not self.pairs:
            return f"{head}; no class pair stands out"
        shown = ", ".join(f"{name(g)} -> {name(t)} ({r:.0%})" for g, t, r in self.pairs[:max_pairs])
        more = f", +{len(self.pairs) - max_pairs} more" if len(self.pairs) > max_pairs else ""
        return f"{head}; likely swapped (given -> true): {shown}{more}"


def _share(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `{name}` as a share in [0, 1]; got {value!r}.")
    return float(value)


def _as_evidence(entry: Any, where: str) -> ClassEvidence:
    if isinstance(entry, ClassEvidence):
        return entry
    if isinstance(entry, Mapping):
        return ClassEvidence.from_dict(dict(entry))
    raise TypeError(
        f"Expected {where} to be a gwa.ClassEvidence or its to_dict(); got {type(entry).__name__}."
    )


def estimate_noise_map(
    evidence: ClassEvidence | Sequence[ClassEvidence | Mapping[str, Any]],
    *,
    window: tuple[int, int] | None = None,
) -> NoiseMap:
    """The noise map from one :class:`gwa.ClassEvidence` or a run's sequence of them (one per epoch).

    Args:
        evidence: one record (e.g. of per-sample window means), or one per epoch (records or their ``to_dict()``).
        window: the epochs (1-based, inclusive) of a sequence to average; default all of them. A run's window is
            :func:`noise_map_window`.

    Raises:
        ValueError: for an empty sequence or window, records of different class counts, or a window outside the
            sequence.
    """
    records = [evidence] if isinstance(evidence, ClassEvidence) else list(evidence)
    if not records:
        raise ValueError("Expected at least one ClassEvidence; got none.")
    records = [_as_evidence(r, f"`evidence[{i}]`") for i, r in enumerate(records)]
    first, last = (1, len(records)) if window is None else (int(window[0]), int(window[1]))
    if not 1 <= first <= last <= len(records):
        raise ValueError(
            f"Expected `window` within epochs 1..{len(records)} (first <= last); got {window!r}."
        )
    chosen = records[first - 1 : last]
    c = chosen[0].num_classes
    if any(r.num_classes != c for r in chosen):
        raise ValueError(
            f"Expected every ClassEvidence to have {c} classes; got {sorted({r.num_classes for r in chosen})}."
        )
    # Counts summed over the epochs, then per class the off-diagonal share of the confidently aligned samples.
    confident = np.sum([r.confident_confusion for r in chosen], axis=0).astype(np.float64)
    sides = confident.sum(axis=1)
    q = np.where(sides[:, None] > 0, confident / np.maximum(sides, 1.0)[:, None], 0.0)
    np.fill_diagonal(q, 0.0)
    count = np.asarray(np.round(np.mean([r.count for r in chosen], axis=0)), dtype=np.int64)
    per_class = q.sum(axis=1)
    total = float(count.sum())
    rate = float((per_class * count).sum() / total) if total else 0.0
    even = per_class / max(c - 1, 1)  # each off-diagonal cell's share were the class's noise spread evenly
    standout = (q >= PAIR_MIN_RATE) & (q >= PAIR_STANDOUT * even[:, None])
    cells = [(int(g), int(t), float(q[g, t])) for g, t in zip(*np.nonzero(standout))]
    pairs = tuple(sorted(cells, key=lambda x: (-x[2], x[0], x[1])))
    mass = float((q * count[:, None]).sum())
    in_pairs = sum(q[g, t] * count[g] for g, t, _ in pairs)
    concentration = in_pairs / mass if mass > 0 else 0.0
    return NoiseMap(
        rate,
        per_class,
        tuple((g, t, round(r, 6)) for g, t, r in pairs),
        concentration,
        count,
        None if window is None and isinstance(evidence, ClassEvidence) else (first, last),
    )


def evidence_of(history: Sequence[Entry], evidence=None) -> list[ClassEvidence] | None:
    """The run's per-epoch evidence: ``evidence`` when given, else each row's ``class_evidence`` key; None when
    some epoch has none."""
    rows = as_rows(history)
    if evidence is None:
        found = [r.get("class_evidence") for r in rows]
        if not found or any(e is None for e in found):
            return None
        evidence = found
    records = [_as_evidence(e, f"`evidence[{i}]`") for i, e in enumerate(evidence)]
    if len(records) != len(rows):
        raise ValueError(
            f"Expected one ClassEvidence per epoch of `history` ({len(rows)}); got {len(records)}."
        )
    return records


def noise_map_window(
    history: Sequence[Entry], evidence=None, *, total_epochs: int | None = None
) -> tuple[int, int]:
    """The epochs the noise map averages: after the warm-up through gwa's default choice among the epochs past
    the early transient (an epoch's training accuracy within 15 points of what the model fits, capped at one
    minus the run's mean negative share); through the last epoch when that rule cannot choose.

    The ``window`` flag rule's construction (:func:`gwa.policy.flag_window`), with the cap read from the per-epoch
    records (the mean over epochs of the negatively aligned share) instead of per-sample means, so that a callback
    that keeps no per-sample scores, the run directory and the report all read the same window.
    """
    rows = as_rows(history)
    if not rows:
        raise ValueError("Expected a non-empty `history`; got no epochs.")
    return window_after_warmup(rows, evidence_of(rows, evidence), warmup_epochs(total_epochs or len(rows)))


def window_after_warmup(rows: list, records: list[ClassEvidence] | None, warmup: int) -> tuple[int, int]:
    """:func:`noise_map_window` for metric rows and a given warm-up (epochs)."""
    first = min(warmup, len(rows) - 1) + 1
    acc = series(rows, "train_acc")
    if records is not None and not np.isfinite(acc).any():
        acc = np.array([r.correct.sum() / max(int(r.count.sum()), 1) for r in records])
    values = series(rows, "gwa")
    if np.isfinite(acc).any():
        negative = (
            np.mean([r.negative.sum() / max(int(r.count.sum()), 1) for r in records]) if records else 0.0
        )
        reachable = min(float(np.nanmax(acc)), 1.0 - float(negative))
        values[np.isfinite(acc) & (acc < reachable - _TRANSIENT_GAP)] = np.nan
    try:
        last = choose(values, warmup=warmup) + 1
    except ValueError:
        last = len(rows)
    return first, max(first, last)


def noise_map_of_run(
    history: Sequence[Entry], evidence=None, *, total_epochs: int | None = None
) -> NoiseMap | None:
    """:func:`estimate_noise_map` over :func:`noise_map_window`, abstaining (``reliable=False``) where the run
    cannot tell noise from hard samples yet (:func:`abstain_reason`); None when the run holds no class evidence."""
    records = evidence_of(history, evidence)
    if records is None:
        return None
    window = noise_map_window(history, records, total_epochs=total_epochs)
    nm = estimate_noise_map(records, window=window)
    rows = as_rows(history)
    reason = abstain_reason(rows, records, window, nm.rate, warmup_epochs(total_epochs or len(rows)))
    return replace(nm, reliable=False, reason=reason) if reason else nm


def ambiguous_share(records: Sequence[ClassEvidence]) -> float:
    """The share of the records' samples that are negatively aligned but not confidently off the diagonal
    (neither side of the map's ratio): hard clean samples, or flipped ones the model fits unconfidently."""
    count = float(np.sum([r.count.sum() for r in records]))
    negative = float(np.sum([r.negative.sum() for r in records]))
    off = float(np.sum([r.confident_confusion.sum() - np.trace(r.confident_confusion) for r in records]))
    return max(negative - off, 0.0) / count if count > 0 else 0.0


def is_ambiguous(noise_map: NoiseMap) -> bool:
    """Whether a map abstains only because its evidence is ambiguous (:data:`MAX_AMBIGUOUS`): its rate is no
    estimate, but where its misfit concentrates (pairs, concentration) is still what the run shows."""
    return not noise_map.reliable and noise_map.reason.startswith(AMBIGUOUS_REASON)


def has_flag_pairs(noise_map: NoiseMap) -> bool:
    """Whether the ``pair_aware`` flag rule reads this map: reliable or ambiguous (:func:`is_ambiguous`), with
    pairs holding at least :data:`PAIR_FLAG_CONCENTRATION` of its off-diagonal mass."""
    usable = noise_map.reliable or is_ambiguous(noise_map)
    return usable and bool(noise_map.pairs) and noise_map.concentration >= PAIR_FLAG_CONCENTRATION


def abstain_reason(
    rows: list, records: list[ClassEvidence], window: tuple[int, int], rate: float, warmup: int
) -> str:
    """Why a run's map cannot tell noise from hard samples yet ("" when it can); see the module docstring."""
    first, last = window
    count = np.mean([r.count for r in records[first - 1 : last]], axis=0)
    if count.min() < MIN_CLASS_COUNT:
        return (
            f"class {int(np.argmin(count))} has {count.min():.0f} samples per epoch; the map needs at least "
            f"{MIN_CLASS_COUNT} per class"
        )
    if warmup < 1:
        return (
            f"the run's {len(rows)} planned epochs leave no warm-up epoch (a tenth of the run) to skip the early "
            "transient; the map needs at least 10 epochs"
        )
    acc = np.array([r.correct.sum() / max(int(r.count.sum()), 1) for r in records])
    logged = series(rows, "train_acc")
    acc = np.where(np.isfinite(logged), logged, acc)
    unexplained = 1.0 - float(acc[last - 1]) - rate
    if unexplained > MAX_UNEXPLAINED:
        return (
            f"under-fitted: at epoch {last} {unexplained:.0%} of the samples are neither fitted nor counted as "
            f"noise (at most {MAX_UNEXPLAINED:.0%}); train longer"
        )
    ambiguous = ambiguous_share(records[first - 1 : last])
    if ambiguous > MAX_AMBIGUOUS:
        return (
            f"{AMBIGUOUS_REASON} {ambiguous:.1%} of the samples in epochs {first}-{last} are misfit without "
            f"confidence (at most {MAX_AMBIGUOUS:.1%}): hard clean samples or label noise, the map cannot tell "
            "which; a small validation split can"
        )
    return ""
