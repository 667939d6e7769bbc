"""The grid's finished run directories read into :class:`RunResult`: chosen epochs, detection, flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gwa.bench.grid import is_complete, variant_of

#: k of the ``lastk`` flag rule in the tables.
FLAG_LAST_K = 3


@dataclass
class RunResult:
    """What the tables need from one finished run directory."""

    path: Path
    setting: tuple  # (dataset, model, noise, noise_rate, schedule)
    seed: int
    variant: str
    epochs: int
    wall_time: float
    test_at: dict[str, float]  # criterion -> test accuracy at its chosen epoch
    chosen: dict[str, int]  # criterion -> epoch
    #: criterion -> accuracy on the run's held-out split at its chosen epoch, noisy / clean labels (split runs)
    val_at: dict[str, float] = field(default_factory=dict)
    val_clean_at: dict[str, float] = field(default_factory=dict)
    detection: dict[str, tuple[float, float]] = field(default_factory=dict)  # score -> (AUROC, AUPRC)
    noise_fraction: float = 0.0
    #: method -> {"precision", "recall", "f1", "auroc", "sample_passes"}: gwa's flag rules and, when its result
    #: file exists, cleanlab (noisy full runs only)
    flags: dict[str, dict[str, float]] = field(default_factory=dict)
    noise_estimate: float | None = None  # gwa.policy.estimate_noise_rate
    #: estimator -> estimated noise rate, every full run with alignment scores (clean ones too): the default
    #: ``negative_share`` and the candidates of :data:`gwa.bench.candidates.NOISE_RATE_CANDIDATES` (``cand:``)
    noise_estimates: dict[str, float] = field(default_factory=dict)


def load_result(path: Path) -> RunResult | None:
    """Read one complete run directory; None if it is not a bench run (unknown held-out fraction)."""
    from gwa import policy
    from gwa.baselines import detection
    from gwa.rundir import load_run

    run = load_run(path)
    c = run.config
    variant = variant_of(c.get("val_frac", 0.0))
    if variant is None or not run.metrics:
        return None
    rows = run.metrics
    chosen = policy.select_all(
        rows, finetune=bool(c.get("finetune")), total_epochs=int(c.get("epochs") or len(rows))
    )
    chosen.update(candidate_choices(rows))
    if "alignment" in run.signals():  # split runs too: the selection-only Δ applies every criterion there
        chosen.update(score_candidate_choices(run))
    test = policy.series(rows, "test_acc")
    index = {int(r["epoch"]): i for i, r in enumerate(rows)}
    test_at = {k: float(test[index[e]]) for k, e in chosen.items()}
    val, val_clean = policy.series(rows, "val_acc"), policy.series(rows, "val_acc_clean")
    result = RunResult(
        path=path,
        setting=(c["dataset"], c["model"], c["noise"], float(c["noise_rate"]), c["schedule"]),
        seed=int(c["seed"]),
        variant=variant,
        epochs=len(rows),
        wall_time=float(rows[-1].get("wall_time") or 0.0),
        test_at=test_at,
        chosen=chosen,
        val_at={k: float(val[index[e]]) for k, e in chosen.items() if np.isfinite(val[index[e]])},
        val_clean_at={
            k: float(val_clean[index[e]]) for k, e in chosen.items() if np.isfinite(val_clean[index[e]])
        },
    )
    mask = run.noise_mask
    if variant == "full" and "alignment" in run.signals():
        result.noise_estimates = noise_rate_estimates(run)
        if mask is not None:
            result.noise_fraction = float(mask.mean())
    if variant == "full" and mask is not None and mask.any() and not mask.all():
        scores = detection.run_scores(run, epoch=chosen.get(policy.DEFAULT_CRITERION))
        result.detection = {name: detection.ranking_quality(s, mask) for name, s in scores.items()}
        result.flags = flag_comparison(run, path.parent, path.name)
        result.noise_estimate = policy.estimate_noise_rate(run.score_matrix("alignment")).rate
    return result


#: gwa's flag rules in the flag table, the default first.
FLAG_METHODS = ("window", "lastk", "mean", "frac")


def flag_comparison(run, root: Path, name: str) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and AUROC of gwa's flag rules (one training run) and of cleanlab (K folds, when
    ``root/cleanlab/<name>.npz`` exists) against the run's noise mask; ``sample_passes`` = epochs x samples."""
    from sklearn.metrics import roc_auc_score

    from gwa.bench import cleanlab_baseline
    from gwa.bench.candidates import FLAG_CANDIDATES
    from gwa.report import flag_samples

    mask = run.noise_mask.astype(bool)
    passes = float(len(run.epochs) * mask.size)
    out = {}
    for rule in FLAG_METHODS:
        f = flag_samples(run, rule=rule, last_k=FLAG_LAST_K)
        flagged = np.zeros(mask.size, dtype=bool)
        flagged[f.sample_ids[f.flagged]] = True
        out[rule] = {
            **cleanlab_baseline.flag_quality(flagged, mask),
            "auroc": float(f.auroc or float("nan")),
            "sample_passes": passes,
        }
    matrix = run.score_matrix("alignment")
    for cand, flag_rule in FLAG_CANDIDATES.items():
        try:
            score, flagged = flag_rule(run.metrics, matrix)
        except ValueError:
            continue
        seen = np.isfinite(score)
        out[f"cand:{cand}"] = {
            **cleanlab_baseline.flag_quality(flagged, mask),
            "auroc": float(roc_auc_score(mask[seen], -score[seen])),
            "sample_passes": passes,
        }
    cl = cleanlab_baseline.load_result(root, name)
    if cl is not None:
        out.update(cleanlab_baseline.cleanlab_flags(cl, mask))
    return out


def noise_rate_estimates(run) -> dict[str, float]:
    """``{estimator: rate}`` of one run: gwa's default and every noise-rate candidate (prefixed ``cand:``)."""
    from gwa import policy
    from gwa.bench.candidates import NOISE_RATE_CANDIDATES

    matrix = run.score_matrix("alignment")
    out = {"negative_share": policy.estimate_noise_rate(matrix).rate}
    for name, estimate in NOISE_RATE_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = estimate(run.metrics, matrix)
        except ValueError:
            continue
    return out


def candidate_choices(rows: list[dict]) -> dict[str, int]:
    """Epochs picked by the research candidates of :mod:`gwa.bench.candidates` (prefixed ``cand:``)."""
    from gwa.bench.candidates import CANDIDATES

    out = {}
    epochs = [int(r["epoch"]) for r in rows]
    for name, choose in CANDIDATES.items():
        try:
            out[f"cand:{name}"] = epochs[choose(rows)]
        except (ValueError, KeyError):
            continue
    return out


def median_curve(matrix: np.ndarray) -> np.ndarray:
    out = np.full(matrix.shape[0], np.nan)
    for e, row in enumerate(matrix):
        seen = row[np.isfinite(row)]
        if seen.size:
            out[e] = float(np.median(seen))
    return out


def _positive_mean_curve(matrix: np.ndarray) -> np.ndarray:
    """Mean alignment of the positively aligned samples: the mean without the negatively aligned mode."""
    out = np.full(matrix.shape[0], np.nan)
    for e, row in enumerate(matrix):
        pos = row[np.isfinite(row) & (row > 0)]
        if pos.size:
            out[e] = float(pos.mean())
    return out


#: Research candidates that need the per-sample scores (not only the metric rows): name -> (E, N) -> (E,) curve,
#: chosen with the paper's rule. The median is the location of the majority mode when fewer than half the
#: samples sit in the negatively aligned (mislabeled) mode.
SCORE_CANDIDATES = {"align_median": median_curve, "align_positive_mean": _positive_mean_curve}


def score_candidate_choices(run) -> dict[str, int]:
    from gwa.bench.candidates import SCORE_ROW_CANDIDATES
    from gwa.policy import choose, warmup_epochs

    matrix = run.score_matrix("alignment")
    out = {}
    for name, curve in SCORE_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = run.epochs[choose(curve(matrix), warmup=warmup_epochs(len(run.epochs)))]
        except ValueError:
            continue
    for name, pick in SCORE_ROW_CANDIDATES.items():
        try:
            out[f"cand:{name}"] = run.epochs[pick(run.metrics, matrix)]
        except (ValueError, KeyError):
            continue
    return out


def collect(root: Path, log=print) -> list[RunResult]:
    results = []
    for cfg in sorted(Path(root).rglob("config.json")):
        path = cfg.parent
        if not is_complete(path):
            log(f"skipping incomplete run {path}")
            continue
        r = load_result(path)
        if r is not None:
            results.append(r)
    return results
