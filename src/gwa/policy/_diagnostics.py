"""Trust diagnostics: when not to trust an epoch choice, each with a code, a message and an action.

:func:`diagnose` looks at a finished (or partial) history, the epoch a criterion chose in it and, optionally, the
per-sample alignment matrix, and returns the :class:`Diagnostic` objects that apply (an empty list: nothing
known speaks against the choice). Checks, from training-time quantities and, for ``split_disagrees``, the run's
own validation split where it logs one:

============================ =============================================================================
``early_transient``          the choice lies in the first :data:`TRANSIENT_FRACTION` of training while the
                             training accuracy there is still :data:`TRANSIENT_ACC_GAP` below what the model
                             fits later (capped at 1 - estimated noise rate): the alignment peaked before the
                             model learned the data, a transient seen in short runs (the digits CNN)
``still_rising``             the choice is the last epoch and the criterion rose over the last epochs:
                             training longer may choose a better epoch
``class_conditional``        the noise map (:func:`gwa.policy.estimate_noise_map`, from the rows'
                             ``class_evidence``) holds swapped class pairs that carry at least
                             :data:`CONCENTRATION_ALARM` of its off-diagonal mass: class-pair noise (or,
                             on an ambiguous map, classes the model confuses), where gwa's choice fell
                             10-14 points behind a noisy split on CNNs. Neither noise code fires while the
                             run's map abstains for another reason (too short, under-fitted or too few
                             samples per class); ``label_noise`` not while it abstains at all
``label_noise``              (information, ``level="info"``) the estimated label-noise rate is at least
                             :data:`NOISE_ALARM` and no class pair stands out (or no class evidence is
                             logged): the noise looks spread over the classes, where gwa's choice held
``split_disagrees``          the run logs a validation split's accuracy (``val_acc``, in [0, 1]) whose best epoch scores
                             at least :data:`SPLIT_GAP` above the chosen epoch: the one selector with theory
                             under class-conditional noise prefers another epoch, and gwa says so instead of
                             keeping its choice silently
``short_warmup``             the warm-up skips fewer than :data:`MIN_WARMUP_STEPS` optimizer steps (needs a
                             ``step`` key in the rows)
``paper_pole``               (criterion ``gwa_paper``) the paper's denominator is at or below 0 at some
                             epoch after the warm-up, so its argmax may sit at the kurtosis pole
============================ =============================================================================

The thresholds were set on the development grid (digits; docs/protocol.md) and are reported, with how often each
diagnostic fires, on the held-out grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gwa.policy._criteria import (
    DEFAULT_CRITERION,
    Entry,
    as_rows,
    get_criterion,
    select_epoch,
    series,
    warmup_epochs,
)
from gwa.policy._noise_map import CONCENTRATION_ALARM, NoiseMap, is_ambiguous, noise_map_of_run
from gwa.policy._noise_rate import estimate_noise_rate
from gwa.policy._transient import TRANSIENT_ACC_GAP

TRANSIENT_FRACTION = 0.3
RISING_EPOCHS = 3
NOISE_ALARM = 0.10
MIN_WARMUP_STEPS = 50
#: ``split_disagrees`` fires when the split's best epoch scores this much above the chosen one (2 points: the
#: margin by which issue 18 counts a choice as lost to a split; not tuned).
SPLIT_GAP = 0.02


@dataclass(frozen=True)
class Diagnostic:
    """One reason not to trust a choice: a stable ``code``, what was seen, and what to do about it."""

    code: str
    message: str
    action: str
    evidence: dict = field(default_factory=dict)
    #: ``"warning"`` (a reason to doubt the choice) or ``"info"`` (worth knowing; nothing to do about the choice).
    level: str = "warning"

    def __str__(self) -> str:
        return f"[{self.code}] {self.message} -> {self.action}"


def diagnose(
    history: Sequence[Entry],
    criterion: str = DEFAULT_CRITERION,
    *,
    epoch: int | None = None,
    alignment=None,
    total_epochs: int | None = None,
    finetune: bool = False,
    evidence=None,
    noise_map: NoiseMap | None = None,
) -> list[Diagnostic]:
    """The diagnostics that apply to ``criterion``'s choice in ``history``.

    Args:
        history: the run's epochs (:class:`gwa.EpochSummary` or metric rows; ``train_acc`` and ``step`` keys are
            used when present).
        criterion: the criterion whose choice is judged.
        epoch: its chosen epoch (1-based); default: :func:`gwa.select_epoch` on the history.
        alignment: optional ``(E, N)`` per-sample alignment (NaN = unseen), for the noise-rate checks.
        total_epochs: the planned number of epochs (fixes the warm-up); default the history's length.
        finetune: the paper's fine-tuning rule, as for :func:`gwa.select_epoch`.
        evidence: the run's :class:`gwa.ClassEvidence` per epoch (or their ``to_dict()``); default: the rows'
            ``class_evidence`` key when every row has one.
        noise_map: the run's noise map, when already computed (default: :func:`gwa.policy.noise_map_of_run`).

    Example:
        >>> rows = [{"gwa": g, "train_acc": a} for g, a in zip([.01, .05, .09, .06, .04, .03, .03, .03, .03, .03],
        ...                                                    [.2, .4, .5, .7, .8, .9, .95, .97, .98, .99])]
        >>> [d.code for d in diagnose(rows)]
        ['early_transient']
    """
    get_criterion(criterion)
    rows = as_rows(history)
    if not rows:
        raise ValueError("Expected a non-empty `history`; got no epochs.")
    total = len(rows) if total_epochs is None else int(total_epochs)
    if epoch is None:
        epoch = select_epoch(rows, criterion, finetune=finetune, total_epochs=total)
    epochs = [int(r["epoch"]) for r in rows]
    if int(epoch) not in epochs:
        raise ValueError(
            f"Expected `epoch` among the history's epochs {epochs[0]}..{epochs[-1]}; got {epoch}."
        )
    i = epochs.index(int(epoch))
    noise = None
    if alignment is not None:
        noise = estimate_noise_rate(alignment)
    if noise_map is None:
        noise_map = noise_map_of_run(rows, evidence, total_epochs=total)
    out: list[Diagnostic] = []
    for check in (_early_transient, _still_rising, _split_disagrees, _short_warmup, _paper_pole):
        d = check(rows, criterion, i, total, noise)
        if d is not None:
            out.append(d)
    out.extend(_noise_diagnostics(noise, noise_map))
    return out


def is_class_conditional(noise_map: NoiseMap) -> bool:
    """Whether a noise map shows concentrated pair structure (what ``class_conditional`` fires on): a reliable or
    an ambiguous map (its rate withheld, its pairs still where the misfit concentrates) whose pairs hold at least
    :data:`CONCENTRATION_ALARM` of its off-diagonal mass."""
    usable = noise_map.reliable or is_ambiguous(noise_map)
    return usable and bool(noise_map.pairs) and noise_map.concentration >= CONCENTRATION_ALARM


def _early_transient(rows, criterion, i, total, noise) -> Diagnostic | None:
    acc = series(rows, "train_acc")
    if not np.isfinite(acc[i]) or i + 1 > TRANSIENT_FRACTION * total:
        return None
    later = acc[i + 1 :]
    later = later[np.isfinite(later)]
    if later.size == 0:
        return None
    reachable = float(later.max())
    if noise is not None:  # a noisy run's plateau before memorisation is about 1 - noise rate
        reachable = min(reachable, 1.0 - noise.rate)
    if acc[i] > reachable - TRANSIENT_ACC_GAP:
        return None
    return Diagnostic(
        "early_transient",
        f"epoch {rows[i]['epoch']} lies in the first {TRANSIENT_FRACTION:.0%} of training and its training "
        f"accuracy ({acc[i]:.1%}) is {reachable - acc[i]:.1%} below what the model fits later ({reachable:.1%}): "
        f"the alignment peaked before the model learned the data",
        "train longer (the warm-up should cover the transient), or keep a small validation split for this run",
        {"epoch": int(rows[i]["epoch"]), "train_acc": float(acc[i]), "reachable_train_acc": reachable},
    )


def _still_rising(rows, criterion, i, total, noise) -> Diagnostic | None:
    key = get_criterion(criterion).key
    if not get_criterion(criterion).per_epoch_value or i != len(rows) - 1 or len(rows) < total:
        return None
    v = series(rows, key)[-(RISING_EPOCHS + 1) :]
    if v.size < RISING_EPOCHS + 1 or not np.all(np.isfinite(v)) or not np.all(np.diff(v) > 0):
        return None
    return Diagnostic(
        "still_rising",
        f"the chosen epoch is the last one and {key} rose in each of the last {RISING_EPOCHS} epochs",
        "train longer: the best epoch may lie beyond this run",
        {"last_values": [float(x) for x in v]},
    )


def _noise_diagnostics(noise, noise_map: NoiseMap | None) -> list[Diagnostic]:
    if noise_map is not None and is_class_conditional(noise_map):
        shown = ", ".join(f"{g} -> {t} ({r:.0%})" for g, t, r in noise_map.pairs[:4])
        what = (
            f"labels look swapped between a few class pairs (given -> likely true: {shown}); "
            f"{noise_map.concentration:.0%} of the estimated noise ({noise_map.rate:.0%} of labels) lies in them"
            if noise_map.reliable
            else f"the misfit samples concentrate in a few class pairs (given -> predicted: {shown}): swapped labels "
            "or classes the model confuses, the noise map cannot tell which (no rate estimated)"
        )
        return [
            Diagnostic(
                "class_conditional",
                f"{what}. This describes the labels, not the choice: where it fired, gwa's choice lost 2+ points "
                "to a noisy 10% split in 24 of 64 development and replication runs (18 of 86 where it did not), "
                "and 10-14 points on CNNs in both held-out benchmarks (docs/noise-map.md, docs/results.md)",
                "keep a small validation split (or use --veto-frac)",
                {**noise_map.to_dict(), "noise_rate": noise_map.rate if noise_map.reliable else None},
            )
        ]
    if noise_map is not None and not noise_map.reliable:
        return []  # the run cannot tell noise from hard samples: no rate finding (issue 18)
    rate = noise_map.rate if noise_map is not None else None if noise is None else noise.rate
    if rate is None or rate < NOISE_ALARM:
        return []
    how = (
        "the noise map (confidently negatively aligned samples)"
        if noise_map is not None
        else "the share of samples with mean alignment < 0"
    )
    spread = "; no class pair stands out" if noise_map is not None else " (no class evidence logged)"
    return [
        Diagnostic(
            "label_noise",
            f"estimated label-noise rate {rate:.0%} ({how}){spread}",
            "inspect the flagged samples (gwa flag); noise spread over the classes did not cost gwa's choice "
            "against a validation split in gwa's benchmarks"
            if noise_map is not None
            else "inspect the flagged samples (gwa flag); log class evidence (gwa.class_evidence) to tell "
            "class-pair noise, where a small validation split is needed, from noise spread over the classes",
            {"noise_rate": rate, "method": "noise_map" if noise_map is not None else noise.method},
            level="info",
        )
    ]


def _split_disagrees(rows, criterion, i, total, noise) -> Diagnostic | None:
    if criterion in ("val", "val_clean"):
        return None  # the split's own choice
    acc = series(rows, "val_acc")
    seen = acc[np.isfinite(acc)]
    if not np.isfinite(acc[i]) or seen.size < 2 or seen.min() < 0 or seen.max() > 1:
        return None  # no split at the choice, or not an accuracy in [0, 1] (a percentage: nothing to compare)
    j = int(np.nanargmax(acc))  # the first epoch at the split's best, as the `val` criterion chooses
    gap = float(acc[j] - acc[i])
    if gap < SPLIT_GAP - 1e-12:
        return None
    chosen, best = int(rows[i]["epoch"]), int(rows[j]["epoch"])
    evidence = {
        "split_epoch": best,
        "split_acc": float(acc[j]),
        "chosen_split_acc": float(acc[i]),
        "gap": gap,
    }
    size = series(rows, "val_size")[j]  # logged by gwa train; a loop that records val_acc alone has none
    noise = ""
    if np.isfinite(size) and size > 0:
        se = float(np.sqrt(acc[j] * (1 - acc[j]) / size))  # the split's accuracy's binomial standard error
        evidence |= {"split_size": int(size), "standard_error": se}
        if gap < 2 * se:
            noise = (
                f"; on {int(size)} samples the split's accuracy has a standard error of about {100 * se:.1f} "
                "points, so a gap this small can be chance"
            )
    return Diagnostic(
        "split_disagrees",
        f"the run's validation split (val_acc) scores epoch {best} at {acc[j]:.1%} and the chosen epoch "
        f"{chosen} at {acc[i]:.1%}, {100 * gap:.1f} points lower{noise}",
        "prefer the split's epoch (criterion 'val'), or let the split choose among gwa's candidates "
        "(--veto-frac, veto=)",
        evidence,
    )


def _short_warmup(rows, criterion, i, total, noise) -> Diagnostic | None:
    if not get_criterion(criterion).per_epoch_value:
        return None
    steps = series(rows, "step")
    w = warmup_epochs(total)
    skipped = 0.0 if w == 0 else steps[w - 1]
    if not np.isfinite(steps).any() or not (w == 0 or np.isfinite(skipped)) or skipped >= MIN_WARMUP_STEPS:
        return None
    return Diagnostic(
        "short_warmup",
        f"the warm-up skips {int(skipped)} optimizer steps (the first {w} epochs); early alignment transients "
        f"last longer than that in short runs",
        "train with more optimizer steps (more epochs or a smaller batch) before trusting the choice",
        {"warmup_epochs": w, "warmup_steps": int(skipped)},
    )


def _paper_pole(rows, criterion, i, total, noise) -> Diagnostic | None:
    if criterion != "gwa_paper":
        return None
    kurt = series(rows, "align_excess_kurtosis")[warmup_epochs(total) :]
    n_pole = int(np.sum(np.isfinite(kurt) & (kurt + 1.2 <= 0)))
    if n_pole == 0:
        return None
    return Diagnostic(
        "paper_pole",
        f"the paper's denominator (excess kurtosis + 1.2) is <= 0 in {n_pole} epoch(s) after the warm-up",
        "use gwa's default criterion ('gwa', mean / Pearson kurtosis), which has no pole",
        {"epochs_at_pole": n_pole},
    )
