"""The run's ``summary.json``, built from its metrics and run directory, and printed: every criterion's choice,
the default's diagnostics, the noise map, and the label noise ``gwa train`` added."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from gwa.runner.config import RunConfig

log = logging.getLogger(__name__)


def build_summary(rows: list[dict], config: RunConfig, data, out: Path) -> dict:
    """summary.json: for each criterion, the chosen epoch and the accuracies there; the default criterion's
    choice with its trust diagnostics (:func:`gwa.policy.diagnose`)."""
    from gwa import DEFAULT_CRITERION, policy
    from gwa.integrations._classes import noise_estimate
    from gwa.runner import checkpoint, resume_checks

    evidence = class_evidence_of(out, rows)
    noise_map = policy.noise_map_of_run(rows, evidence, total_epochs=config.epochs) if evidence else None
    choices = policy.select_all(rows, finetune=config.finetune, total_epochs=config.epochs) if rows else {}
    if (
        rows and config.veto_frac > 0
    ):  # the tiny-split veto's choice among gwa's candidates (as the stopper's)
        veto_rows = (
            [{**r, "class_evidence": e} for r, e in zip(rows, evidence, strict=True)] if evidence else rows
        )
        choices["veto"], _ = policy.choose_with_veto(
            veto_rows, total_epochs=config.epochs, finetune=config.finetune
        )
    by_epoch = {int(r["epoch"]): r for r in rows}
    acc_keys = [
        "test_acc",
        "val_acc",
        "val_acc_clean",
        "veto_acc",
        *(f"eval_{n}_acc" for n in config.eval_sets),
    ]
    criteria = {}
    for name, epoch in choices.items():
        row = by_epoch.get(int(epoch), {})
        criteria[name] = {"epoch": int(epoch), **{k: row.get(k) for k in acc_keys if k in row}}
    best = checkpoint.read_mark(out, f"best_{DEFAULT_CRITERION}") if rows else None
    stale = resume_checks.stale_best_note(best, criteria.get(DEFAULT_CRITERION, {}).get("epoch"))
    if best is not None and stale is not None:
        log.warning("%s: %s.", out, stale)
        best = {**best, "stale": True, "note": stale}
    last = rows[-1] if rows else {}
    return {
        "default": DEFAULT_CRITERION,
        "criteria": criteria,
        "epochs_run": len(rows),
        "epochs_planned": config.epochs,
        "final_test_acc": last.get("test_acc"),
        "best_checkpoint": best,
        "diagnostics": [
            dataclasses.asdict(d) for d in run_diagnostics(rows, config, out, evidence, noise_map)
        ],
        **noise_estimate(noise_map, list(data.classes)),
        "num_samples": data.num_samples,
        "realised_noise_rate": data.realised_noise_rate,
        "noise": {
            "kind": config.noise,
            "rate_requested": config.noise_rate,
            "rate_actual": data.realised_noise_rate,
            "num_noisy": int(data.noise_mask.sum()),
        },
    }


def class_evidence_of(out: Path, rows: list[dict]) -> list | None:
    """The run's :class:`gwa.ClassEvidence` per logged epoch (``classes.jsonl``), None when an epoch has none."""
    from gwa.rundir import load_run

    return load_run(out).class_evidence() if rows else None


def run_diagnostics(rows: list[dict], config: RunConfig, out: Path, evidence=None, noise_map=None) -> list:
    """:func:`gwa.policy.diagnose` of the default criterion's choice, with the run's per-sample alignment and
    per-class evidence (the noise map and ``class_conditional``)."""
    from gwa import DEFAULT_CRITERION, policy
    from gwa.rundir import RunDirError, load_run

    if not rows:
        return []
    try:
        alignment = load_run(out).score_matrix("alignment")
    except RunDirError:  # no per-sample scores stored
        alignment = None
    return policy.diagnose(
        rows,
        DEFAULT_CRITERION,
        alignment=alignment,
        total_epochs=config.epochs,
        finetune=config.finetune,
        evidence=evidence if noise_map is not None else None,
        noise_map=noise_map,
    )


def policy_diagnostic(d: dict):
    """A diagnostic of summary.json as the :class:`gwa.policy.Diagnostic` it was."""
    from gwa.policy import Diagnostic

    return Diagnostic(**d)


def print_summary(out: Path, file=None) -> None:
    import json

    file = file or sys.stdout
    summary = json.loads((out / "summary.json").read_text())
    print(f"run directory: {out}", file=file)
    run, planned = summary.get("epochs_run"), summary.get("epochs_planned")
    if run is not None and planned is not None and run < planned:
        print(f"stopped early after {run} of {planned} epochs (--early-stop)", file=file)
    for name, info in summary["criteria"].items():
        acc = info.get("test_acc")
        acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
        print(f"  {name:<12} epoch {info['epoch']:>4}   test acc {acc_text}", file=file)
    best = summary.get("best_checkpoint")
    if isinstance(best, dict) and best.get("stale"):
        print(f"  warning: {best.get('note')}", file=file)
    for line in noise_lines(summary) + trust_lines(summary):
        print(line, file=file)
    print(
        f"next: gwa report {out}   (figures and HTML)   gwa flag {out}   (likely mislabeled samples)",
        file=file,
    )


def noise_lines(summary: dict) -> list[str]:
    """The label noise gwa train added (its realised rate) and the noise map of summary.json (``noise_estimate``:
    rate and likely swapped pairs), a line each, where known: the truth beside the estimate."""
    lines = []
    noise = summary.get("noise")
    rate = summary.get("realised_noise_rate")
    if isinstance(noise, dict) and noise.get("kind") not in (None, "none") and isinstance(rate, (int, float)):
        lines.append(
            f"  label noise added: {noise['kind']} {noise.get('rate_requested')}, {100 * rate:.1f}% of labels flipped"
        )
    estimate = summary.get("noise_estimate")
    if isinstance(estimate, dict) and isinstance(estimate.get("description"), str):
        lines.append(f"  {estimate['description']}")
    return lines


def trust_lines(summary: dict) -> list[str]:
    """One line per diagnostic of summary.json (:func:`gwa.policy.diagnose` on the default criterion's choice),
    as :class:`gwa.policy.Diagnostic` prints itself (information marked ``(info)``)."""
    diagnostics = summary.get("diagnostics") or []
    lines = [
        f"  trust: [{d['code']}] {'(info) ' if d.get('level') == 'info' else ''}{d['message']} -> {d['action']}"
        for d in diagnostics
    ]
    return lines or ["  trust: no diagnostic fired"]
