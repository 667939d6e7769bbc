"""Class-aware stop candidates from the per-class evidence, and the tiny-split veto that chooses among candidates.

Each reads the ``class_evidence`` key of a run's metric rows (one :class:`gwa.ClassEvidence`, or its ``to_dict()``,
per epoch) and is registered in :data:`gwa.policy.CRITERIA`, so ``select_epoch``/``select_all`` and every table
show it. Candidates for issue 18 (development data: docs/noise-map.md; registered for the held-out grid H''
in docs/protocol.md):

======================= ===================================================================================
``class_memorisation``  per-class memorisation alarm: per given label, the share of its samples confidently
                        negatively aligned (:attr:`gwa.ClassEvidence.confident_confusion` off the diagonal);
                        a class whose share peaked at >= ``MEMORISATION_MIN_SHARE`` after the warm-up alarms at
                        the first later epoch where the share fell below ``KEPT`` of its peak (its flipped labels
                        are being fitted). Choice: the epoch before the earliest alarm; the last epoch without one
``class_ceiling``       per-class noise ceiling: a class with an estimated noise rate
                        ``tau_c >= CEILING_MIN_RATE`` (the noise map over the epochs so far) crosses when its
                        training accuracy on the given labels exceeds ``1 - tau_c + CEILING_SLACK`` (a model that
                        fits only the clean labels cannot). Choice: the epoch before the first crossing after the
                        warm-up; the last epoch without one
``class_gwa``           per-class GWA: per epoch the median over the classes of mean_c / (excess kurtosis_c + 3);
                        the paper's rule (warm-up, then the argmax) on it
``class_agreement``     two signals agree: the later of ``class_memorisation``'s and ``class_ceiling``'s choices
                        (memorisation counts only when both see it)
``veto``                the tiny-split veto: among the epochs its candidates choose (:data:`VETO_CANDIDATES`),
                        the one with the highest ``veto_acc`` (accuracy on a small noisy split); never a free
                        argmax over all epochs. Ties go to the earlier candidate in the list
======================= ===================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gwa._class_evidence import ClassEvidence
from gwa.policy._criteria import (
    CRITERIA,
    DEFAULT_CRITERION,
    Criterion,
    Entry,
    as_rows,
    choose,
    get_criterion,
    warmup_epochs,
)
from gwa.policy._noise_map import estimate_noise_map, evidence_of, window_after_warmup

#: ``class_memorisation``: a class alarms when its confident negative share falls below this fraction of its peak
#: (0.75, as the global ``gwa_memorisation``, stopped clean runs early where hard clean samples get learned: -3.9
#: and -9.7 points against the 10% split on the development runs; 0.5 did not; docs/noise-map.md) ...
KEPT = 0.5
#: ... and classes whose share never reached this are not watched.
MEMORISATION_MIN_SHARE = 0.15
#: ``class_ceiling``: classes with an estimated noise rate below this are not watched.
CEILING_MIN_RATE = 0.05
#: ``class_ceiling``: how far above ``1 - tau_c`` a class's training accuracy may go before it counts as crossing.
CEILING_SLACK = 0.02
#: The candidates the veto chooses among, in priority order (ties go to the earlier one).
VETO_CANDIDATES = (DEFAULT_CRITERION, "class_memorisation", "class_ceiling", "last")
#: The metric-row key holding the veto split's accuracy of an epoch.
VETO_KEY = "veto_acc"


def _records(rows: list) -> list[ClassEvidence]:
    records = evidence_of(rows)
    if records is None:
        raise ValueError("Expected `class_evidence` in every epoch of the history; some epoch has none.")
    return records


def _share(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def confident_negative_share(records: Sequence[ClassEvidence]) -> np.ndarray:
    """``(E, C)``: per epoch and given label, the share of its samples confidently negatively aligned."""
    out = []
    for r in records:
        off = r.confident_confusion.sum(axis=1) - np.diag(r.confident_confusion)
        out.append(_share(off.astype(np.float64), r.count))
    return np.array(out)


def _before(alarm: int | None, warmup: int, n: int) -> int:
    """The epoch (0-based) before a 0-based alarm epoch, never inside the warm-up; the last epoch without one."""
    if alarm is None:
        return n - 1
    return max(alarm - 1, min(warmup, n - 1))


def pick_class_memorisation(rows: list, warmup: int, finetune: bool = False) -> int:
    share = confident_negative_share(_records(rows))
    n = share.shape[0]
    alarms = []
    for c in range(share.shape[1]):
        v = share[warmup:, c]
        if not np.isfinite(v).any() or np.nanmax(v) < MEMORISATION_MIN_SHARE:
            continue
        peak = warmup + int(np.nanargmax(v))
        below = np.flatnonzero(np.isfinite(share[peak:, c]) & (share[peak:, c] < KEPT * share[peak, c]))
        if below.size:
            alarms.append(peak + int(below[0]))
    return _before(min(alarms) if alarms else None, warmup, n)


def pick_class_ceiling(rows: list, warmup: int, finetune: bool = False) -> int:
    records = _records(rows)
    n = len(records)
    nm = estimate_noise_map(records, window=window_after_warmup(rows, records, warmup))
    watched = nm.per_class >= CEILING_MIN_RATE
    acc = np.array([_share(r.correct.astype(np.float64), r.count) for r in records])
    over = (acc > 1.0 - nm.per_class + CEILING_SLACK) & watched
    crossing = [e for e in range(warmup, n) if over[e].any()]
    return _before(crossing[0] if crossing else None, warmup, n)


def class_gwa_values(records: Sequence[ClassEvidence]) -> np.ndarray:
    """``(E,)``: per epoch, the median over the classes of the pole-free GWA mean_c / (excess kurtosis_c + 3)."""
    out = []
    for r in records:
        with np.errstate(invalid="ignore", divide="ignore"):
            v = r.mean / (r.excess_kurtosis + 3.0)
        v = v[np.isfinite(v)]
        out.append(float(np.median(v)) if v.size else np.nan)
    return np.array(out)


def pick_class_gwa(rows: list, warmup: int, finetune: bool = False) -> int:
    return choose(class_gwa_values(_records(rows)), warmup=warmup, finetune=finetune)


def pick_class_agreement(rows: list, warmup: int, finetune: bool = False) -> int:
    return max(pick_class_memorisation(rows, warmup), pick_class_ceiling(rows, warmup))


def candidate_epochs(
    rows: list, warmup: int, candidates: Sequence[str] = VETO_CANDIDATES, finetune: bool = False
) -> dict[str, int]:
    """``{candidate: 0-based epoch}`` for the candidates that can choose in ``rows`` (in their order)."""
    out: dict[str, int] = {}
    for name in candidates:
        crit = get_criterion(name)
        if name == "veto":
            raise ValueError("The veto cannot be its own candidate; got 'veto' in `candidates`.")
        try:
            out[name] = int(crit.pick(rows, warmup, finetune))
        except ValueError:  # its key is missing, or nothing finite where it looks
            continue
    return out


def pick_veto(
    rows: list, warmup: int, finetune: bool = False, candidates: Sequence[str] = VETO_CANDIDATES
) -> tuple[int, str]:
    """The veto's choice (0-based) and the candidate that made it: the candidate epoch with the highest
    ``veto_acc``; the first candidate's when no candidate epoch has one.

    Raises:
        ValueError: when no candidate can choose.
    """
    chosen = candidate_epochs(rows, warmup, candidates, finetune)
    if not chosen:
        raise ValueError(
            f"Expected at least one veto candidate ({', '.join(candidates)}) to choose; none can."
        )
    best_name, best_acc = next(iter(chosen)), -np.inf
    for name, epoch in chosen.items():
        acc = rows[epoch].get(VETO_KEY)
        if acc is not None and np.isfinite(float(acc)) and float(acc) > best_acc:
            best_name, best_acc = name, float(acc)
    return chosen[best_name], best_name


def choose_with_veto(
    history: Sequence[Entry],
    *,
    candidates: Sequence[str] = VETO_CANDIDATES,
    total_epochs: int | None = None,
    finetune: bool = False,
) -> tuple[int, str]:
    """Post hoc: the epoch (1-based) the veto keeps, and which candidate chose it (see :func:`pick_veto`).

    The rows carry the veto split's accuracy as ``veto_acc``; :class:`gwa.EarlyStopper` with ``veto=...`` gives
    the same answer online.

    Example:
        >>> rows = [{"gwa": g, "veto_acc": a} for g, a in zip([.1, .5, .4, .3, .2], [.5, .6, .7, .9, .8])]
        >>> choose_with_veto(rows, candidates=("gwa", "last"))   # epoch 4 has the best split accuracy, but
        (5, 'last')
    """
    rows = as_rows(history)
    if not rows:
        raise ValueError("Expected a non-empty `history`; got no epochs.")
    total = len(rows) if total_epochs is None else int(total_epochs)
    epoch, name = pick_veto(rows, warmup_epochs(total), finetune, tuple(candidates))
    return int(rows[epoch]["epoch"]), name


CLASS_CRITERIA = (
    Criterion(
        "class_memorisation", "class_evidence", "per-class memorisation alarm", pick_class_memorisation
    ),
    Criterion(
        "class_ceiling", "class_evidence", "per-class noise ceiling on training accuracy", pick_class_ceiling
    ),
    Criterion("class_gwa", "class_evidence", "per-class GWA (median over classes)", pick_class_gwa),
    Criterion(
        "class_agreement", "class_evidence", "class memorisation and ceiling agree", pick_class_agreement
    ),
    Criterion(
        "veto",
        VETO_KEY,
        "tiny noisy split choosing among gwa's candidates",
        lambda rows, w, f: pick_veto(rows, w, f)[0],
    ),
)


def _register() -> None:
    """Add the class-aware criteria and the veto to :data:`CRITERIA`, after the alignment criteria."""
    order = list(CRITERIA.items())
    CRITERIA.clear()
    for name, crit in order:
        CRITERIA[name] = crit
        if name == "align_mean":
            CRITERIA.update((c.name, c) for c in CLASS_CRITERIA)
    for c in CLASS_CRITERIA:  # in case the table had no align_mean
        CRITERIA.setdefault(c.name, c)


_register()
