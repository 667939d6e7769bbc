"""Hand-built per-sample epochs with known label noise, for the noise map, the diagnostic and the candidates."""

import numpy as np

import gwa

C = 6
N_PER_CLASS = 200


def epoch(flips: dict[tuple[int, int], float], *, hard: float = 0.0, fitted: float = 0.0, seed: int = 0):
    """One epoch's ClassEvidence: ``flips[(given, true)]`` = share of class ``given`` whose true class is ``true``;
    ``hard`` = share of clean samples misclassified near 0 (hard clean); ``fitted`` = share of the flipped
    samples already memorised (positively aligned, predicted as given)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), N_PER_CLASS)
    truth = labels.copy()
    for (given, true), share in flips.items():
        members = np.flatnonzero((labels == given) & (truth == given))
        truth[members[: round(share * N_PER_CLASS)]] = true
    scores = rng.uniform(0.04, 0.08, labels.size)  # clean and learned: positive
    preds = truth.copy()
    flipped = truth != labels
    scores[flipped] = -rng.uniform(0.04, 0.08, flipped.sum())  # a flipped sample mirrors a clean one
    memorised = flipped & (rng.random(labels.size) < fitted)
    scores[memorised], preds[memorised] = 0.03, labels[memorised]
    hard_ids = np.flatnonzero(~flipped & (rng.random(labels.size) < hard))
    scores[hard_ids] = -rng.uniform(0.0, 0.01, hard_ids.size)  # near 0: not confidently negative
    preds[hard_ids] = (labels[hard_ids] + 1) % C
    return gwa.class_evidence(scores, labels, preds, C), flipped.mean()


def run(flips, *, epochs: int = 10, fitted=None, hard: float = 0.0):
    """Metric rows with ``class_evidence``, ``gwa`` and ``train_acc`` of a run that memorises per ``fitted``."""
    fitted = fitted or [0.0] * epochs
    rows = []
    for e in range(epochs):
        ev, _ = epoch(flips, hard=hard, fitted=fitted[e], seed=e)
        acc = ev.correct.sum() / ev.count.sum()
        rows.append(
            {
                "gwa": 0.03 - 0.001 * abs(e - 4) - 0.01 * fitted[e],
                "train_acc": float(acc),
                "class_evidence": ev,
            }
        )
    return rows


SWAPS = {(0, 1): 0.3, (1, 0): 0.3, (2, 3): 0.25, (3, 2): 0.25}
SYMMETRIC = {(g, t): 0.06 for g in range(C) for t in range(C) if g != t}
