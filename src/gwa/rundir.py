"""The run directory: the contract between training (any trainer) and analysis (report, flag, compare).

Layout (``FORMAT`` = 2; format-1 runs are still read), all plain files::

    RUN/
      config.json            {"format": 2, "gwa_version": ..., "status": "running"|"complete", ...run config}
      metrics.jsonl          one JSON object per finished epoch (keys below), appended as epochs end
      labels.npy             int64 (N,): the training labels used, indexed by sample id
      clean_labels.npy       int64 (N,): the labels before noise injection (when known)
      noise_mask.npy         bool (N,): True where the training label was changed (when known)
      scores/alignment_0001.npy   float32 (N,): epoch 1's alignment per sample id, NaN where unseen
      scores/<signal>_0001.npy    optional further per-sample signals (loss, margin, p_gold, el2n, correct)
      source_index.npy       int64 (N,): each sample id's index in the source dataset (written by gwa train)
      previews.npy, preview_ids.npy   optional inputs of some samples for the report's thumbnails:
                             (K, H, W), (K, H, W, 3) images or (K, L) 1-D signals, and their sample ids (K,)
      summary.json           {"format": 2, "criteria": {name: {"epoch": e, "test_acc": a, ...}}, ...} at the end
      checkpoints/           framework checkpoints: last.pt + last.json (what resume reads), best_<criterion>.pt +
                             .json; never read by the analysis side

Epochs are numbered from 1. Metric keys written by gwa's trainers (absent or ``null`` when not measured):
``epoch, step, lr, train_loss, train_acc``, the alignment keys of :meth:`gwa.EpochSummary.metrics` (``align_mean,
align_std, align_excess_kurtosis, gwa`` (the default criterion's value), ``gwa_paper, gwa_paper_flagged, gwa_guard``
(a :class:`gwa.GuardCode` value), ``gwa_guard_message, n_scores, n_undefined``), n_duplicates, n_non_finite, val_acc (noisy-label split), val_acc_clean,
test_acc, eval_<name>_acc, prediction_changes, grad_disparity, wall_time`` plus any extra scalar a trainer logs.
Non-finite floats are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 2
#: Formats this gwa reads: format 1 (gwa 0.1) logged the paper's value as ``gwa``; its rows are upgraded on read.
READABLE_FORMATS = (1, 2)
SCORES_DIR = "scores"


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or of another format version."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def score_file(signal: str, epoch: int) -> str:
    return f"{SCORES_DIR}/{signal}_{int(epoch):04d}.npy"


class RunWriter:
    """Write a run directory as training goes.

    Args:
        path: the run directory.
        config: the run's configuration (JSON-serialisable); ``format``, ``gwa_version`` and ``status`` are added.
        num_samples: N, the number of training samples (sample ids are ``0..N-1``).
        labels, clean_labels, noise_mask: optional ``(N,)`` arrays written once.
        resume: continue an existing run: keep its files, drop metrics of epochs after ``resume_epoch``.
        resume_epoch: the last epoch whose results are kept on resume (default: all logged epochs).
        overwrite: allow writing into a non-empty directory that is not being resumed.

    Raises:
        RunDirError: when ``path`` holds another run (or another format) and neither ``resume`` nor
            ``overwrite`` is set, so that nothing already written is lost.
    """

    def __init__(self, path, config: dict, num_samples: int, *, labels=None, clean_labels=None, noise_mask=None,
                 resume: bool = False, resume_epoch: int | None = None, overwrite: bool = False):
        from gwa import __version__

        self.path = Path(path)
        self.num_samples = int(num_samples)
        if self.num_samples <= 0:
            raise ValueError(f"Expected `num_samples` > 0; got {num_samples!r}.")
        existing = self.path.exists() and any(self.path.iterdir())
        if resume:
            if not (self.path / "config.json").exists():
                raise RunDirError(f"Cannot resume: {self.path} holds no run (no config.json).")
            if read_config(self.path)["format"] != FORMAT:
                raise RunDirError(f"Cannot resume {self.path}: it is a run of format {read_config(self.path)['format']}"
                                  f" (an older gwa); this gwa writes format {FORMAT}. Start a new run.")
            self._truncate_metrics(resume_epoch)
        elif existing and not overwrite:
            raise RunDirError(
                f"Run directory {self.path} is not empty; pass resume=True to continue it or overwrite=True "
                f"(--resume / --overwrite on the command line) to replace it."
            )
        (self.path / SCORES_DIR).mkdir(parents=True, exist_ok=True)
        if not resume and overwrite:
            for stale in ("metrics.jsonl", "summary.json", "labels.npy", "clean_labels.npy", "noise_mask.npy",
                          "previews.npy", "preview_ids.npy"):
                (self.path / stale).unlink(missing_ok=True)
            for stale in (self.path / SCORES_DIR).glob("*.npy"):
                stale.unlink()
        contract = {"format": FORMAT, "gwa_version": __version__, "status": "running", "num_samples": self.num_samples}
        # The contract's keys come first and win: a user's own "format" or "status" must not make the run unreadable.
        self.config = {**contract, **config, **contract}
        _write_json_atomic(self.path / "config.json", self.config)
        for name, arr, dtype in (("labels", labels, np.int64), ("clean_labels", clean_labels, np.int64),
                                 ("noise_mask", noise_mask, bool)):
            if arr is not None:
                arr = np.asarray(arr).astype(dtype)
                if arr.shape != (self.num_samples,):
                    raise ValueError(f"Expected `{name}` of shape ({self.num_samples},); got shape={arr.shape}.")
                _save_npy_atomic(self.path / f"{name}.npy", arr)

    def _truncate_metrics(self, resume_epoch: int | None) -> None:
        # Always rewrite: this drops a torn last line, which new rows appended after it would otherwise hide.
        rows = read_metrics(self.path)
        if resume_epoch is not None:
            rows = [r for r in rows if r["epoch"] <= resume_epoch]
        self._rewrite_metrics(rows)
        for f in (self.path / SCORES_DIR).glob("*.npy"):
            epoch = f.stem.rsplit("_", 1)[-1]
            interrupted = f.name.endswith(".tmp.npy")  # a write that crashed before its rename
            if interrupted or (resume_epoch is not None and epoch.isdigit() and int(epoch) > resume_epoch):
                f.unlink()

    def _rewrite_metrics(self, rows: list[dict]) -> None:
        tmp = self.path / "metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(_jsonable(r)) + "\n" for r in rows))
        os.replace(tmp, self.path / "metrics.jsonl")

    def log_epoch(self, metrics: dict, scores: dict[str, np.ndarray] | None = None) -> None:
        """Append one epoch: ``metrics`` must hold ``epoch`` (>= 1); ``scores`` maps signal names to ``(N,)``."""
        epoch = metrics.get("epoch")
        if not isinstance(epoch, (int, np.integer)) or epoch < 1:
            raise ValueError(f"Expected `metrics['epoch']` to be an integer >= 1; got {epoch!r}.")
        for signal, arr in (scores or {}).items():
            arr = np.asarray(arr, dtype=np.float32)
            if arr.shape != (self.num_samples,):
                raise ValueError(f"Expected scores[{signal!r}] of shape ({self.num_samples},) indexed by sample id; "
                                 f"got shape={arr.shape}.")
            _save_npy_atomic(self.path / score_file(signal, epoch), arr)
        # Scores first, then the metrics line: a metrics row always has its scores on disk.
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(_jsonable(metrics)) + "\n")

    def write_labels(self, labels) -> None:
        """Write (or replace) ``labels.npy``: ``(N,)`` training labels by sample id, ``-1`` where not known."""
        labels = np.asarray(labels).astype(np.int64)
        if labels.shape != (self.num_samples,):
            raise ValueError(f"Expected `labels` of shape ({self.num_samples},); got shape={labels.shape}.")
        _save_npy_atomic(self.path / "labels.npy", labels)

    def write_previews(self, sample_ids, inputs) -> None:
        """Store inputs of some samples (images (K, H, W[, 3]) or 1-D signals (K, L)) for thumbnails."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        inputs = np.asarray(inputs)
        if ids.ndim != 1 or inputs.shape[:1] != ids.shape or inputs.ndim not in (2, 3, 4):
            raise ValueError(f"Expected `sample_ids` (K,) and `inputs` (K, L), (K, H, W) or (K, H, W, 3); "
                             f"got {ids.shape} and {inputs.shape}.")
        _save_npy_atomic(self.path / "preview_ids.npy", ids)
        _save_npy_atomic(self.path / "previews.npy", inputs)

    def write_summary(self, summary: dict) -> None:
        _write_json_atomic(self.path / "summary.json", {"format": FORMAT, **summary})

    def finish(self) -> None:
        """Mark the run complete."""
        self.config["status"] = "complete"
        _write_json_atomic(self.path / "config.json", self.config)


def upgrade_row(row: dict, fmt: int) -> dict:
    """A metrics row of run-directory format ``fmt`` in the keys of the current format.

    Format 1 logged the paper's value as ``gwa`` (and ``gwa_flagged``, a prose ``gwa_guard``); format 2 logs the
    default criterion's value as ``gwa`` and the paper's as ``gwa_paper``.
    """
    if fmt != 1 or "gwa_paper" in row:
        return row
    from gwa._summary import pearson_ratio

    out = dict(row)
    out["gwa_paper"] = out.pop("gwa", None)
    out["gwa_paper_flagged"] = out.pop("gwa_flagged", None)
    message = out.pop("gwa_guard", None)
    codes = (("no scores", "no_scores"), ("constant", "constant_scores"), ("kurtosis pole", "kurtosis_pole"))
    out["gwa_guard"] = None if message is None else next((c for p, c in codes if message.startswith(p)),
                                                         "kurtosis_pole")
    out["gwa_guard_message"] = message
    mean, kurt = out.get("align_mean"), out.get("align_excess_kurtosis")
    value = None if mean is None or kurt is None else pearson_ratio(mean, kurt)
    out["gwa"] = value if value is not None and math.isfinite(value) else None
    return out


def read_config(path) -> dict:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise RunDirError(f"{path} is not a gwa run directory: no config.json.")
    config = json.loads(cfg_path.read_text())
    if config.get("format") not in READABLE_FORMATS:
        raise RunDirError(f"{path} has run-directory format {config.get('format')!r}; this gwa reads formats "
                          f"{', '.join(map(str, READABLE_FORMATS))}. Re-run it with this version, or read it with the gwa that wrote it "
                          f"({config.get('gwa_version', 'unknown version')}).")
    return config


def read_metrics(path) -> list[dict]:
    """Per-epoch metric rows; a torn last line (interrupted write) is dropped."""
    rows = []
    metrics_path = Path(path) / "metrics.jsonl"
    if not metrics_path.exists():
        return rows
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


@dataclass
class Run:
    """A run directory loaded for analysis. Arrays are loaded lazily per epoch."""

    path: Path
    config: dict
    metrics: list[dict]
    summary: dict | None
    labels: np.ndarray | None
    clean_labels: np.ndarray | None
    noise_mask: np.ndarray | None
    preview_ids: np.ndarray | None = None
    previews: np.ndarray | None = None
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

    def series(self, key: str) -> np.ndarray:
        """One metric over epochs as float64, NaN where missing or null."""
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in self.metrics], dtype=np.float64)

    def signals(self) -> list[str]:
        return sorted({f.stem.rsplit("_", 1)[0] for f in (self.path / SCORES_DIR).glob("*.npy")})

    def scores(self, epoch: int, signal: str = "alignment") -> np.ndarray:
        f = self.path / score_file(signal, epoch)
        if not f.exists():
            raise RunDirError(f"{self.path} has no {signal!r} scores for epoch {epoch} ({f.name}).")
        return np.load(f)

    def score_matrix(self, signal: str = "alignment") -> np.ndarray:
        """``(E, N)`` per-epoch scores for the logged epochs, NaN where a sample was not seen."""
        key = ("matrix", signal)
        if key not in self._cache:
            self._cache[key] = np.stack([self.scores(e, signal) for e in self.epochs]) if self.metrics else \
                np.empty((0, int(self.config.get("num_samples", 0))), dtype=np.float32)
        return self._cache[key]


def load_run(path) -> Run:
    """Load a run directory written by :class:`RunWriter` (by gwa's trainers or any integration)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"Run directory {path} does not exist.")
    config = read_config(path)
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None

    def opt(name):
        f = path / f"{name}.npy"
        return np.load(f) if f.exists() else None

    return Run(path=path, config=config, metrics=[upgrade_row(r, config["format"]) for r in read_metrics(path)], summary=summary, labels=opt("labels"),
               clean_labels=opt("clean_labels"), noise_mask=opt("noise_mask"), preview_ids=opt("preview_ids"),
               previews=opt("previews"))
