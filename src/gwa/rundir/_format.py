"""The format: its version, the names of a run's files, which files are gwa's, and format-1 rows upgraded."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

FORMAT = 2
#: Formats this gwa reads: format 1 (gwa 0.1) logged the paper's value as ``gwa``; its rows are upgraded on read.
READABLE_FORMATS = (1, 2)
SCORES_DIR = "scores"
CHECKPOINT_DIR = "checkpoints"
REPORT_DIR = "report"
LOCK_FILE = "gwa.lock"
#: Files gwa writes at the top of a run directory: ``overwrite`` deletes these and nothing else (besides the
#: score and checkpoint files matching :data:`_OWN_SCORE` and :data:`_OWN_CHECKPOINT`).
OWN_FILES = (
    "metrics.jsonl",
    "metrics.jsonl.torn",
    "classes.jsonl",
    "summary.json",
    "labels.npy",
    "clean_labels.npy",
    "noise_mask.npy",
    "source_index.npy",
    "previews.npy",
    "preview_ids.npy",
    "config.json",
)
#: A write's temporary file: ``<name>.<16 hex digits>.tmp`` (``<name>.tmp`` from older gwa); see ``_atomic``.
_TEMP = r"(\.[0-9a-f]{16})?\.tmp"
_OWN_SCORE = re.compile(rf"[A-Za-z0-9_]+_\d{{4,}}\.npy({_TEMP}|\.tmp\.npy)?")
_OWN_CHECKPOINT = re.compile(rf"(last|best_[A-Za-z0-9_]+)(-\d{{4,}})?\.(pt|msgpack|json)({_TEMP})?")
_OWN_TOP_TEMP = re.compile("(" + "|".join(re.escape(n) for n in OWN_FILES) + f"){_TEMP}")


def is_own_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of a write gwa makes at the top of a run (left by a kill)."""
    return _OWN_TOP_TEMP.fullmatch(name) is not None


def own_score_epoch(name: str) -> int | None:
    """The epoch of ``scores/<name>`` when it is a score file gwa writes (or its temporary), else None."""
    if _OWN_SCORE.fullmatch(name) is None:
        return None
    return int(name.split(".", 1)[0].rsplit("_", 1)[1])


def is_own_checkpoint(name: str, tag: str, suffix: str) -> bool:
    """Whether ``checkpoints/<name>`` is a file gwa writes for checkpoint ``tag``: ``<tag>-NNNN<suffix>`` (or
    the ``<tag><suffix>`` of older gwa); a user's ``last-backup.pt`` is not."""
    return re.fullmatch(rf"{re.escape(tag)}(-\d{{4,}})?{re.escape(suffix)}", name) is not None


def score_file(signal: str, epoch: int | np.integer) -> str:
    return f"{SCORES_DIR}/{signal}_{int(epoch):04d}.npy"


def own_files(path) -> list[Path]:
    """The files in ``path`` that gwa writes (what ``overwrite`` deletes), sorted."""
    path = Path(path)
    found = [path / name for name in OWN_FILES if (path / name).is_file()]
    if path.is_dir():
        found += [f for f in path.iterdir() if is_own_temporary(f.name) and f.is_file()]
    for folder, pattern in ((SCORES_DIR, _OWN_SCORE), (CHECKPOINT_DIR, _OWN_CHECKPOINT)):
        if (path / folder).is_dir() and not (path / folder).is_symlink():
            found += [f for f in (path / folder).iterdir() if f.is_file() and pattern.fullmatch(f.name)]
    return sorted(found)


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
    out["gwa_guard"] = (
        None
        if message is None
        else next((c for p, c in codes if str(message).startswith(p)), "kurtosis_pole")
    )
    out["gwa_guard_message"] = None if message is None else str(message)
    mean, kurt = out.get("align_mean"), out.get("align_excess_kurtosis")
    value = None if mean is None or kurt is None else pearson_ratio(mean, kurt)
    out["gwa"] = value if value is not None and math.isfinite(value) else None
    return out
