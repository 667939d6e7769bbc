"""The reader: a run directory loaded for analysis, naming what it could not read."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gwa.rundir._arrays import load_array, load_run_arrays
from gwa.rundir._classes import read_class_rows
from gwa.rundir._errors import RunDirError, RunDirWarning
from gwa.rundir._format import FORMAT, READABLE_FORMATS, SCORES_DIR, own_score_epoch, score_file, upgrade_row
from gwa.rundir._safety import MAX_JSON_BYTES, MAX_JSON_DEPTH, check_json_depth, check_run_tree, read_regular
from gwa.rundir._summary import RunSummary, upgrade_summary


def parse_json(text: str | bytes, where, what: str) -> Any:
    """JSON ``text`` of file ``where``; invalid or absurdly nested JSON is a :class:`RunDirError` naming it."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise RunDirError(
            f"{where} is nested too deeply to read (more than {MAX_JSON_DEPTH} levels); expected {what}."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{where} is not valid JSON ({exc}); expected {what}.") from None
    check_json_depth(value, where)
    return value


def _read_json(path: Path, what: str) -> Any:
    return parse_json(read_regular(path, cap=MAX_JSON_BYTES), path, what)


def _check_config(cfg_path: Path, config: dict) -> None:
    """Values the readers use must have their type: a crafted ``num_samples`` of 1e999 or a ``name`` list would
    otherwise end in a traceback or a silently wrong table."""
    n = config.get("num_samples")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
        raise RunDirError(f"{cfg_path}: expected 'num_samples' to be an integer > 0; got {n!r}.")
    for key in ("name", "gwa_version", "status"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise RunDirError(f"{cfg_path}: expected {key!r} to be a string; got {value!r}.")


def read_config(path) -> dict:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise RunDirError(f"{path} is not a gwa run directory: no config.json.")
    config = _read_json(cfg_path, "the run's configuration, a JSON object")
    if not isinstance(config, dict):
        raise RunDirError(
            f"{cfg_path}: expected a JSON object (the run's configuration); got {type(config).__name__}."
        )
    if config.get("format") not in READABLE_FORMATS:
        raise RunDirError(
            f"{path} has run-directory format {config.get('format')!r}; this gwa reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}. Re-run it with this version, or read it with "
            f"the gwa that wrote it ({config.get('gwa_version', 'unknown version')})."
        )
    _check_config(cfg_path, config)
    return config


class MetricsProblem(NamedTuple):
    """An unreadable line of ``metrics.jsonl``: its 1-based number, text and what was wrong with it."""

    line: int
    text: str
    reason: str
    torn: bool  # the last line, cut short by an interrupted write

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class MetricsScan:
    """What :func:`scan_metrics` read: the readable rows, and every line that was not one."""

    path: Path
    rows: list[dict]
    problems: list[MetricsProblem]
    lines: int  # non-empty lines: one per epoch written

    def describe(self) -> str:
        return (
            f"{self.path}: {len(self.rows)} of {self.lines} epochs readable; "
            + "; ".join(map(str, self.problems))
            + "."
        )


def scan_metrics(path) -> MetricsScan:
    """Read ``metrics.jsonl`` line by line, keeping every readable row and naming every other line.

    A row is a JSON object with an integer ``epoch`` >= 1, greater than the previous row's. A last line that is
    not valid JSON and lacks its newline is marked ``torn`` (a write interrupted by a crash).
    """
    metrics_path = Path(path) / "metrics.jsonl"
    rows: list[dict] = []
    problems: list[MetricsProblem] = []
    if not metrics_path.exists():
        return MetricsScan(metrics_path, rows, problems, 0)
    raw = read_regular(metrics_path, cap=MAX_JSON_BYTES).decode("utf-8", errors="replace")
    lines = raw.split("\n")
    count = 0
    last_content = max((i for i, t in enumerate(lines) if t.strip()), default=-1)
    for i, text in enumerate(lines):
        if not text.strip():
            continue
        count += 1
        expected = "a JSON object with an integer 'epoch' >= 1"
        try:
            row = json.loads(text)
            check_json_depth(row, metrics_path)
        except (ValueError, RecursionError):  # RunDirError (too deep) is a ValueError
            torn = i == last_content and not raw.endswith("\n")
            reason = (
                f"torn by an interrupted write (expected {expected})"
                if torn
                else f"expected {expected}; got invalid JSON {text[:60]!r}"
            )
            problems.append(MetricsProblem(i + 1, text, reason, torn))
            continue
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            problems.append(MetricsProblem(i + 1, text, f"expected {expected}; got {text[:60]!r}", False))
        elif rows and epoch <= rows[-1]["epoch"]:
            problems.append(
                MetricsProblem(
                    i + 1,
                    text,
                    f"expected an epoch after {rows[-1]['epoch']} (one row per "
                    f"epoch, increasing); got epoch {epoch} again",
                    False,
                )
            )
        else:
            rows.append(row)
    return MetricsScan(metrics_path, rows, problems, count)


def read_metrics(path) -> list[dict]:
    """Per-epoch metric rows; a torn last line (interrupted write) is dropped.

    Raises:
        RunDirError: naming the file and line when any other line is unreadable (use :func:`scan_metrics` to
            read the rest anyway).
    """
    scan = scan_metrics(path)
    if any(not p.torn for p in scan.problems):
        raise RunDirError(scan.describe())
    return scan.rows


@dataclass
class Run:
    """A run directory loaded for analysis. Arrays are loaded lazily per epoch.

    ``problems`` lists what could not be read (corrupt metrics lines, a summary naming an epoch that was never
    logged); readers show it beside their results instead of silently describing a shorter run.
    """

    path: Path
    config: dict
    metrics: list[dict]
    summary: RunSummary | None  # summary.json in the current schema (older ones upgraded on read)
    labels: np.ndarray | None
    clean_labels: np.ndarray | None
    noise_mask: np.ndarray | None
    preview_ids: np.ndarray | None = None
    previews: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    #: The valid rows of ``classes.jsonl`` (per-class evidence by epoch, :mod:`gwa.rundir._classes`); [] if none.
    classes: list[dict] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def epochs(self) -> list[int]:
        return [int(r["epoch"]) for r in self.metrics]

    @property
    def complete(self) -> bool:
        return self.config.get("status") == "complete"

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name

    @property
    def num_samples(self) -> int | None:
        n = self.config.get("num_samples")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    def series(self, key: str) -> np.ndarray:
        """One metric over epochs as float64, NaN where missing or null."""
        out = np.full(len(self.metrics), np.nan)
        for i, r in enumerate(self.metrics):
            value = r.get(key)
            if value is None:
                continue
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                raise RunDirError(
                    f"{self.path / 'metrics.jsonl'}: expected a number or null for {key!r} at epoch "
                    f"{r['epoch']}; got {value!r}."
                ) from None
        return out

    def class_evidence(self) -> list | None:
        """The :class:`gwa.ClassEvidence` of every logged epoch from ``classes.jsonl``; None when an epoch has none."""
        from gwa import ClassEvidence

        by_epoch = {int(r["epoch"]): r for r in self.classes}
        if not self.epochs or any(e not in by_epoch for e in self.epochs):
            return None
        return [
            ClassEvidence.from_dict({k: v for k, v in by_epoch[e].items() if k != "epoch"})
            for e in self.epochs
        ]

    def signals(self) -> list[str]:
        folder = self.path / SCORES_DIR
        return (
            sorted(
                {
                    f.name.rsplit("_", 1)[0]
                    for f in folder.iterdir()
                    if own_score_epoch(f.name) is not None and f.name.endswith(".npy")
                }
            )
            if folder.is_dir()
            else []
        )

    def scores(self, epoch: int, signal: str = "alignment") -> np.ndarray:
        f = self.path / score_file(signal, epoch)
        if not f.exists():
            raise RunDirError(
                f"{self.path} has no {signal!r} scores for epoch {epoch} ({f.name}); if the run was "
                f"interrupted, `gwa train --resume` repairs it."
            )
        arr = load_array(f, self.num_samples, kinds="biuf")
        if arr.ndim != 1:
            raise RunDirError(
                f"{f}: expected shape ({self.num_samples},), one score per sample; got {arr.shape}."
            )
        return arr.astype(np.float32, copy=False)

    def score_matrix(self, signal: str = "alignment") -> np.ndarray:
        """``(E, N)`` per-epoch scores for the logged epochs, NaN where a sample was not seen."""
        key = ("matrix", signal)
        if key not in self._cache:
            self._cache[key] = (
                np.stack([self.scores(e, signal) for e in self.epochs])
                if self.metrics
                else np.empty((0, int(self.config.get("num_samples", 0))), dtype=np.float32)
            )
        return self._cache[key]


def _check_summary(path: Path, summary: Any, epochs: list[int], problems: list[str]) -> dict:
    where = path / "summary.json"
    if not isinstance(summary, dict):
        raise RunDirError(f"{where}: expected a JSON object; got {type(summary).__name__}.")
    if summary.get("format", FORMAT) not in READABLE_FORMATS:
        raise RunDirError(
            f"{where} has run-directory format {summary.get('format')!r}; this gwa reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}."
        )
    criteria = summary.get("criteria", {})
    if not isinstance(criteria, dict):
        raise RunDirError(f"{where}: expected 'criteria' to be a JSON object; got {type(criteria).__name__}.")
    for name, info in criteria.items():
        epoch = info.get("epoch") if isinstance(info, dict) else "missing"
        if epoch is None:  # a criterion that chose nothing
            continue
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise RunDirError(
                f"{where}: expected criteria[{name!r}] to be an object with an integer 'epoch' >= 1; "
                f"got {info!r}."
            )
        for key, value in info.items():
            if key != "epoch" and not (
                value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            ):
                raise RunDirError(
                    f"{where}: expected criteria[{name!r}][{key!r}] to be a number or null; got {value!r}."
                )
        if epoch not in epochs:
            problems.append(
                f"summary.json: criterion {name!r} chose epoch {epoch}, which metrics.jsonl does not hold."
            )
    return summary


def load_run(path) -> Run:
    """Load a run directory written by :class:`RunWriter` (by gwa's trainers or any integration).

    What cannot be read is named in ``Run.problems`` and warned about (:class:`RunDirWarning`); files that
    are there but unreadable or of the wrong length raise :class:`RunDirError` naming the file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} is a file, not a run directory.")
    if not path.is_dir():
        raise RunDirError(f"Run directory {path} does not exist.")
    check_run_tree(path)
    config = read_config(path)
    scan = scan_metrics(path)
    problems = [scan.describe()] if scan.problems else []
    epochs = [r["epoch"] for r in scan.rows]
    summary_path = path / "summary.json"
    summary = None
    if summary_path.exists():
        checked = _check_summary(path, _read_json(summary_path, "the run's summary"), epochs, problems)
        summary = upgrade_summary(checked, epochs_run=len(epochs))
    n = config.get("num_samples")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    arrays = load_run_arrays(path, n)
    class_rows, class_problems = read_class_rows(path, epochs)
    problems += class_problems
    for message in problems:
        warnings.warn(message, RunDirWarning, stacklevel=2)
    metrics = [upgrade_row(r, config["format"]) for r in scan.rows]
    return Run(
        path=path,
        config=config,
        metrics=metrics,
        summary=summary,
        **arrays,
        problems=problems,
        classes=class_rows,
    )
