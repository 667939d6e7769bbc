"""The per-run results file of a held-out grid: one CSV row per run x criterion, the only input of the analysis.

Written from finished run directories (``gwa bench --from-runs DIR --per-run FILE`` or
``experiments/heldout_analysis.py RUNS --export FILE``); ``experiments/heldout_analysis.py --per-run FILE`` rebuilds
every held-out table from it alone. Columns (:data:`COLUMNS`; empty = not applicable):

- the run: ``grid`` (H, H', H'' or a name), ``dataset``, ``model``, ``noise``, ``noise_rate``, ``schedule``,
  ``seed``, ``variant`` (``full`` = 100% of the training data, ``val10``/``val2``/``val1`` = a noisy split of
  10/2/1% held out);
- ``kind`` and ``criterion``, one of:

  - ``stop``: an epoch-choice criterion (``gwa``, ``gwa_paper``, ``cand:...``, ``labelwave``, ``grad_disparity``,
    ``last``, ``oracle``, ``val``, ``val_clean``); ``epoch`` chosen (1-based), ``test_acc``, and on split runs
    ``val_acc`` / ``val_clean_acc`` (the split's accuracy on its noisy / clean labels) at that epoch, in [0, 1];
  - ``flag``: a mislabel-flag method on a noisy full run (``window``, ``lastk``, ``mean``, ``frac``, ``cand:...``,
    ``cleanlab`` = folds at their last epoch, ``cleanlab_es`` = folds early-stopped on their held-out fold's
    noisy labels); ``precision``, ``recall``, ``f1``, ``auroc``, ``sample_passes`` (training sample-passes);
  - ``noise_rate``: a noise-rate estimator on a full run; ``estimate`` and ``truth`` (the realised flipped share);
  - ``diagnostic``: a trust diagnostic's code that fired on the full run (``estimate`` = 1).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

COLUMNS = (
    "grid",
    "dataset",
    "model",
    "noise",
    "noise_rate",
    "schedule",
    "seed",
    "variant",
    "kind",
    "criterion",
    "epoch",
    "test_acc",
    "val_acc",
    "val_clean_acc",
    "precision",
    "recall",
    "f1",
    "auroc",
    "sample_passes",
    "estimate",
    "truth",
)
KINDS = ("stop", "flag", "noise_rate", "diagnostic")
_TEXT = {"grid", "dataset", "model", "noise", "schedule", "variant", "kind", "criterion"}
_INT = {"seed", "epoch"}


def grid_name(seed: int) -> str:
    """The held-out grid a seed belongs to (docs/protocol.md), else ``dev``."""
    from gwa.bench.grid import HELDOUT2_SEEDS, HELDOUT_SEEDS

    if seed in HELDOUT_SEEDS:
        return "H"
    if seed in HELDOUT2_SEEDS:
        return "H'"
    return "dev"


def rows_from_result(result, *, grid: str | None = None, diagnostics: Sequence[str] = ()) -> list[dict]:
    """The rows of one :class:`gwa.bench.results.RunResult` (plus the codes of the diagnostics that fired)."""
    dataset, model, noise, rate, schedule = result.setting
    base = {
        "grid": grid or grid_name(result.seed),
        "dataset": dataset,
        "model": model,
        "noise": noise,
        "noise_rate": float(rate),
        "schedule": schedule,
        "seed": int(result.seed),
        "variant": result.variant,
    }
    rows = []
    for criterion, epoch in result.chosen.items():
        rows.append(
            {
                **base,
                "kind": "stop",
                "criterion": criterion,
                "epoch": int(epoch),
                "test_acc": result.test_at[criterion],
                "val_acc": result.val_at.get(criterion),
                "val_clean_acc": result.val_clean_at.get(criterion),
            }
        )
    for method, q in result.flags.items():
        rows.append(
            {
                **base,
                "kind": "flag",
                "criterion": method,
                **{k: q.get(k) for k in ("precision", "recall", "f1", "auroc", "sample_passes")},
            }
        )
    for estimator, value in result.noise_estimates.items():
        rows.append(
            {
                **base,
                "kind": "noise_rate",
                "criterion": estimator,
                "estimate": value,
                "truth": result.noise_fraction,
            }
        )
    rows += [{**base, "kind": "diagnostic", "criterion": code, "estimate": 1.0} for code in diagnostics]
    return rows


def fired_diagnostics(path: Path) -> list[str]:
    """Codes of the trust diagnostics that fire on a run directory (sorted)."""
    from gwa import policy
    from gwa.rundir import load_run

    run = load_run(path)
    return sorted({d.code for d in policy.diagnose(run.metrics, alignment=run.score_matrix("alignment"))})


def rows_from_runs(results: Iterable, *, grid: str | None = None) -> list[dict]:
    """Rows of every result; diagnostics are read from the full runs' directories."""
    rows = []
    for r in results:
        codes = fired_diagnostics(r.path) if r.variant == "full" else ()
        rows += rows_from_result(r, grid=grid, diagnostics=codes)
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(rows: Iterable[dict], path: Path) -> Path:
    """Write rows with the columns of :data:`COLUMNS` (unknown keys are an error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return path


def read_csv(path: Path) -> list[dict]:
    """Rows back with their types: text columns as str, seed/epoch as int, numbers as float, empty as None."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(
                f"Expected a per-run results file with the columns of gwa.bench.perrun.COLUMNS; {path} lacks "
                f"{', '.join(missing)}."
            )
        rows = []
        for raw in reader:
            row: dict = {}
            for k in COLUMNS:
                v = raw[k]
                if k in _TEXT:
                    row[k] = v
                elif v == "":
                    row[k] = None
                else:
                    row[k] = int(v) if k in _INT else float(v)
            if row["kind"] not in KINDS:
                raise ValueError(f"Expected `kind` in {', '.join(KINDS)}; got {row['kind']!r} in {path}.")
            rows.append(row)
    return rows
