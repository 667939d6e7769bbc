"""What ``gwa train`` adds to the run's ``summary.json`` (the label noise it added, its best checkpoint), and the
summary printed at the end: every criterion's choice, the diagnostics, the noise map."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gwa.runner.config import RunConfig

if TYPE_CHECKING:
    from gwa.rundir import RunSummary

log = logging.getLogger(__name__)


def summary_fields(rows: list[dict], config: RunConfig, data, out: Path) -> dict:
    """The fields of :class:`gwa.rundir.RunSummary` only ``gwa train`` knows: the label noise it added (``noise``,
    ``realised_noise_rate``) and its best checkpoint (``best_checkpoint``, marked stale when the default criterion
    now chooses another epoch, e.g. after a resume with a longer plan). The rest of the summary is
    :class:`gwa.integrations.EpochMonitor`'s, as for every surface."""
    from gwa import DEFAULT_CRITERION, policy
    from gwa.runner import checkpoint, resume_checks

    best = checkpoint.read_mark(out, f"best_{DEFAULT_CRITERION}") if rows else None
    chosen = (
        policy.select_all(rows, finetune=config.finetune, total_epochs=config.epochs).get(DEFAULT_CRITERION)
        if rows
        else None
    )
    stale = resume_checks.stale_best_note(best, chosen)
    if best is not None and stale is not None:
        log.warning("%s: %s.", out, stale)
        best = {**best, "stale": True, "note": stale}
    return {
        "best_checkpoint": best,
        "realised_noise_rate": data.realised_noise_rate,
        "noise": {
            "kind": config.noise,
            "rate_requested": config.noise_rate,
            "num_noisy": int(data.noise_mask.sum()),
        },
    }


def print_summary(out: Path, file=None) -> None:
    import json

    file = file or sys.stdout
    from gwa.rundir import upgrade_summary

    summary = upgrade_summary(json.loads((out / "summary.json").read_text()))
    print(f"run directory: {out}", file=file)
    run, planned = summary["epochs_run"], summary["epochs_planned"]
    if run is not None and planned is not None and run < planned:
        print(f"stopped early after {run} of {planned} epochs (--early-stop)", file=file)
    for name, info in summary["criteria"].items():
        acc = info.get("test_acc")
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
        print(f"  {name:<12} epoch {info['epoch']:>4}   test acc {acc_text}", file=file)
    best = summary["best_checkpoint"]
    if isinstance(best, dict) and best.get("stale"):
        print(f"  warning: {best.get('note')}", file=file)
    for line in noise_lines(summary) + trust_lines(summary):
        print(line, file=file)
    print(
        f"next: gwa report {out}   (figures and HTML)   gwa flag {out}   (likely mislabeled samples)",
        file=file,
    )


def noise_lines(summary: RunSummary) -> list[str]:
    """The label noise gwa train added (its realised rate) and the noise map of summary.json (``noise_estimate``:
    rate and likely swapped pairs), a line each, where known: the truth beside the estimate."""
    lines = []
    noise, rate = summary["noise"], summary["realised_noise_rate"]
    if isinstance(noise, dict) and noise.get("kind") not in (None, "none") and isinstance(rate, (int, float)):
        lines.append(
            f"  label noise added: {noise['kind']} {noise.get('rate_requested')}, {100 * rate:.1f}% of labels flipped"
        )
    estimate = summary["noise_estimate"]
    if isinstance(estimate, dict) and isinstance(estimate.get("description"), str):
        lines.append(f"  {estimate['description']}")
    return lines


def trust_lines(summary: RunSummary) -> list[str]:
    """One line per diagnostic of summary.json (:func:`gwa.policy.diagnose` on the default criterion's choice),
    as :class:`gwa.policy.Diagnostic` prints itself (information marked ``(info)``)."""
    diagnostics = summary["diagnostics"] or []
    lines = [
        f"  trust: [{d['code']}] {'(info) ' if d.get('level') == 'info' else ''}{d['message']} -> {d['action']}"
        for d in diagnostics
    ]
    return lines or ["  trust: no diagnostic fired"]
