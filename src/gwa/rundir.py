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
      checkpoints/           framework checkpoints: last.json names the file resume reads (last-0005.pt),
                             best_<criterion>.json its file; never read by the analysis side
      gwa.lock               advisory lock held by the one process writing the run (holds its pid)

Epochs are numbered from 1. Metric keys written by gwa's trainers (absent or ``null`` when not measured):
``epoch, step, lr, train_loss, train_acc``, the alignment keys of :meth:`gwa.EpochSummary.metrics` (``align_mean,
align_std, align_excess_kurtosis, gwa`` (the default criterion's value), ``gwa_paper, gwa_paper_flagged, gwa_guard``
(a :class:`gwa.GuardCode` value), ``gwa_guard_message, n_scores, n_undefined``), n_duplicates, n_non_finite, val_acc (noisy-label split), val_acc_clean,
test_acc, eval_<name>_acc, prediction_changes, grad_disparity, wall_time`` plus any extra scalar a trainer logs.
Non-finite floats are written as ``null``.

Safety (docs/reliability.md): a run directory is a gwa run when its ``config.json`` carries ``format`` and
``gwa_version``; ``overwrite`` replaces only such a run and deletes only the files gwa writes. One writer at a
time holds ``gwa.lock``. Every file is written to a temporary name, synced and renamed, so a kill leaves each
file either old or new. Nothing here reads or writes a pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, NamedTuple

import numpy as np

fcntl: ModuleType | None  # None where the platform has no fcntl
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, everything else holds
    fcntl = None

log = logging.getLogger(__name__)

FORMAT = 2
#: Formats this gwa reads: format 1 (gwa 0.1) logged the paper's value as ``gwa``; its rows are upgraded on read.
READABLE_FORMATS = (1, 2)
SCORES_DIR = "scores"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "gwa.lock"
#: Files gwa writes at the top of a run directory: ``overwrite`` deletes these and nothing else (besides the
#: score and checkpoint files matching :data:`_OWN_SCORE` and :data:`_OWN_CHECKPOINT`).
OWN_FILES = (
    "metrics.jsonl",
    "metrics.jsonl.torn",
    "summary.json",
    "labels.npy",
    "clean_labels.npy",
    "noise_mask.npy",
    "source_index.npy",
    "previews.npy",
    "preview_ids.npy",
    "config.json",
)
_OWN_SCORE = re.compile(r"[A-Za-z0-9_]+_\d{4,}\.npy(\.tmp|\.tmp\.npy)?")
_OWN_CHECKPOINT = re.compile(r"(last|best_[A-Za-z0-9_]+)(-\d{4,})?\.(pt|msgpack|json)(\.tmp)?")
#: Test-only fault injection: with this variable set to k, the process SIGKILLs itself at its k-th atomic
#: write, after the temporary file is synced and before the rename that commits it (tests/test_faults.py).
FAULT_ENV = "GWA_FAULT_KILL_AT_WRITE"
_writes_done = 0


class RunDirError(ValueError):
    """A run directory is missing, incomplete, locked, corrupt, or of another format version."""


class RunDirWarning(UserWarning):
    """A run directory was read, but part of it was unreadable (the message says what and where)."""


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


# ------------------------------------------------------------------------------------------ atomic writes


def _fault_point() -> None:
    global _writes_done
    at = os.environ.get(FAULT_ENV)
    if at:
        _writes_done += 1
        if _writes_done == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_atomic(path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` so that it is either its old or its new content after any crash.

    ``write(fh)`` fills a temporary file next to ``path`` (``<name>.tmp``); it is synced, renamed over ``path``
    and the directory entry synced. On an error (a full disk) the temporary file is removed and the error
    raised; ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fault_point()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a failed write names no file: name the target
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path, obj: Any) -> None:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda fh: fh.write(text.encode()))


def save_npy_atomic(path, array: np.ndarray) -> None:
    write_atomic(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))


def score_file(signal: str, epoch: int | np.integer) -> str:
    return f"{SCORES_DIR}/{signal}_{int(epoch):04d}.npy"


# ------------------------------------------------------------------------------------------------ the lock

_held: dict[str, RunLock] = {}  # run directories this process holds, by resolved path


class RunLock:
    """An exclusive advisory lock (``flock``) on ``RUN/gwa.lock``, so that one process writes a run at a time.

    The lock file holds the writer's pid, which a refused second writer names. The lock ends with the process
    (or :meth:`release`), so a killed writer never leaves a stale lock. Within one process a new lock on the
    same directory takes over from an earlier one that was never released (a notebook re-running a cell);
    the earlier holder can no longer write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.superseded = False

    def acquire(self) -> RunLock:
        check_directory(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        previous = _held.get(key)
        if previous is not None and previous._fd is not None:
            log.warning(
                "gwa: taking over %s from an earlier writer in this process that was not closed.", self.path
            )
            self._fd, previous._fd, previous.superseded = previous._fd, None, True
            _held[key] = self
            return self
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(
                    f"Run directory {self.path} is being written by another process (pid {holder}, "
                    f"holding {self.path / LOCK_FILE}); wait for it to finish or choose another "
                    f"--out."
                ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        _held[key] = self
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if _held.get(str(self.path.resolve())) is self:
                del _held[str(self.path.resolve())]

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -------------------------------------------------------------------------------------- what a run holds


def check_directory(path) -> None:
    """Raise unless ``path`` is a directory or does not exist yet (``--out`` naming a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"Expected a run directory; {path} is a file (choose another --out).")


def is_gwa_run(path) -> bool:
    """Whether ``path`` holds a gwa run: a ``config.json`` object with ``format`` and ``gwa_version``."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "format" in config and "gwa_version" in config


def own_files(path) -> list[Path]:
    """The files in ``path`` that gwa writes (what ``overwrite`` deletes), sorted."""
    path = Path(path)
    found = [path / name for name in OWN_FILES if (path / name).is_file()]
    found += [path / f"{name}.tmp" for name in OWN_FILES if (path / f"{name}.tmp").is_file()]
    for folder, pattern in ((SCORES_DIR, _OWN_SCORE), (CHECKPOINT_DIR, _OWN_CHECKPOINT)):
        if (path / folder).is_dir():
            found += [f for f in (path / folder).iterdir() if f.is_file() and pattern.fullmatch(f.name)]
    return sorted(found)


def _entries(path: Path) -> list[str]:
    """What a directory holds besides what a run killed before its first commit leaves: the lock file, gwa's
    temporary files and an empty ``scores/``."""
    if not path.is_dir():
        return []
    leftover = {LOCK_FILE, *(f"{name}.tmp" for name in OWN_FILES)}
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name not in leftover and not (p.name == SCORES_DIR and p.is_dir() and not any(p.iterdir()))
    )


def check_writable(
    path,
    *,
    overwrite: bool,
    hint: str = "pass resume=True to continue it or overwrite=True "
    "(--resume / --overwrite on the command line) to replace it",
) -> None:
    """Raise unless a new run may be written to ``path``: new, empty, or (with ``overwrite``) a gwa run.

    A folder that is not a gwa run is never overwritten: the error lists what would have been deleted.
    """
    path = Path(path)
    check_directory(path)
    entries = _entries(path)
    if not entries:
        return
    if not overwrite:
        raise RunDirError(f"Run directory {path} is not empty; {hint}.")
    if not is_gwa_run(path):
        doomed = [str(f.relative_to(path)) for f in own_files(path)]
        shown = ", ".join(doomed[:8]) + (f" and {len(doomed) - 8} more" if len(doomed) > 8 else "")
        raise RunDirError(
            f"Refusing to overwrite {path}: it is not a gwa run (no config.json with format and "
            f"gwa_version), so it may be someone's data; overwriting would delete "
            f"{shown or 'nothing, but write into it'} (it holds {', '.join(entries[:8])}). "
            f"Choose another --out, or empty it yourself."
        )


# ------------------------------------------------------------------------------------------------ writing


class RunWriter:
    """Write a run directory as training goes.

    Args:
        path: the run directory.
        config: the run's configuration (JSON-serialisable); ``format``, ``gwa_version`` and ``status`` are added.
        num_samples: N, the number of training samples (sample ids are ``0..N-1``).
        labels, clean_labels, noise_mask: optional ``(N,)`` arrays written once.
        resume: continue an existing run: keep its files, drop metrics of epochs after ``resume_epoch``.
        resume_epoch: the last epoch whose results are kept on resume (default: all logged epochs).
        overwrite: replace the gwa run in ``path`` (only gwa's own files are deleted).
        lock: a :class:`RunLock` on ``path`` the caller already holds; by default the writer takes one.

    The writer holds the run's lock until :meth:`finish` or :meth:`close` (or the process ends).

    Raises:
        RunDirError: when ``path`` holds another run (or another format) and neither ``resume`` nor
            ``overwrite`` is set, so that nothing already written is lost; when ``overwrite`` is set but
            ``path`` is not a gwa run; when another process writes ``path``; when ``resume`` finds a corrupt
            ``metrics.jsonl`` line (fix or remove it: resume never deletes a row it cannot read).
    """

    def __init__(
        self,
        path,
        config: dict,
        num_samples: int,
        *,
        labels=None,
        clean_labels=None,
        noise_mask=None,
        resume: bool = False,
        resume_epoch: int | None = None,
        overwrite: bool = False,
        lock: RunLock | None = None,
    ):
        self.path = Path(path)
        self.num_samples = int(num_samples)
        if self.num_samples <= 0:
            raise ValueError(f"Expected `num_samples` > 0; got {num_samples!r}.")
        self._check_target(resume, overwrite)  # a refused writer leaves no trace, not even a lock file
        self._lock = lock if lock is not None else RunLock(self.path).acquire()
        try:
            self._open(config, labels, clean_labels, noise_mask, resume, resume_epoch, overwrite)
        except BaseException:
            if lock is None:
                self._lock.release()
            raise

    def _check_target(self, resume: bool, overwrite: bool) -> None:
        if resume:
            if not (self.path / "config.json").exists():
                raise RunDirError(f"Cannot resume: {self.path} holds no run (no config.json).")
            if read_config(self.path)["format"] != FORMAT:
                raise RunDirError(
                    f"Cannot resume {self.path}: it is a run of format {read_config(self.path)['format']}"
                    f" (an older gwa); this gwa writes format {FORMAT}. Start a new run."
                )
        else:
            check_writable(self.path, overwrite=overwrite)

    def _open(self, config, labels, clean_labels, noise_mask, resume, resume_epoch, overwrite) -> None:
        from gwa import __version__

        self._check_target(resume, overwrite)  # again, now that no other writer can change the folder
        if resume:
            self.rows = self._rows_to_resume(resume_epoch)
        else:
            for stale in own_files(self.path):
                stale.unlink()
            self.rows = []
        contract = {
            "format": FORMAT,
            "gwa_version": __version__,
            "status": "running",
            "num_samples": self.num_samples,
        }
        # The contract's keys come first and win: a user's own "format" or "status" must not make the run unreadable.
        self.config = {**contract, **config, **contract}
        write_json_atomic(
            self.path / "config.json", self.config
        )  # first: from now on the folder is a gwa run
        (self.path / SCORES_DIR).mkdir(exist_ok=True)
        if resume:
            self._rewrite_metrics()
        for name, arr, dtype in (
            ("labels", labels, np.int64),
            ("clean_labels", clean_labels, np.int64),
            ("noise_mask", noise_mask, bool),
        ):
            if arr is not None:
                arr = np.asarray(arr).astype(dtype)
                if arr.shape != (self.num_samples,):
                    raise ValueError(
                        f"Expected `{name}` of shape ({self.num_samples},); got shape={arr.shape}."
                    )
                save_npy_atomic(self.path / f"{name}.npy", arr)

    def _rows_to_resume(self, resume_epoch: int | None) -> list[dict]:
        scan = scan_metrics(self.path)
        bad = [p for p in scan.problems if not p.torn]
        if bad:
            raise RunDirError(
                f"Cannot resume {self.path}: {scan.describe()} Resume never deletes rows it cannot "
                f"read: repair or remove {'that line' if len(bad) == 1 else 'those lines'} and "
                f"resume again."
            )
        if scan.problems:  # a torn last line: an interrupted write of an epoch that resume will redo
            aside = self.path / "metrics.jsonl.torn"
            aside.write_text(scan.problems[0].text + "\n")
            log.warning(
                "gwa: %s: moved the torn last line of metrics.jsonl (line %d) to %s.",
                self.path,
                scan.problems[0].line,
                aside.name,
            )
        rows = scan.rows
        if resume_epoch is not None:
            rows = [r for r in rows if r["epoch"] <= resume_epoch]
        for f in (self.path / SCORES_DIR).glob("*"):
            epoch = f.name.split(".", 1)[0].rsplit("_", 1)[-1]
            interrupted = f.name.endswith((".tmp", ".tmp.npy"))  # a write that crashed before its rename
            if interrupted or (resume_epoch is not None and epoch.isdigit() and int(epoch) > resume_epoch):
                f.unlink()
        return rows

    def _check_lock(self) -> None:
        if not self._lock.held:
            why = "a later writer in this process took it over" if self._lock.superseded else "it was closed"
            raise RunDirError(f"This RunWriter no longer holds {self.path}: {why}.")

    def _rewrite_metrics(self) -> None:
        # The whole file each epoch (a few KB): a kill leaves the old or the new file, never a torn line.
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in self.rows)
        write_atomic(self.path / "metrics.jsonl", lambda fh: fh.write(text.encode()))

    def log_epoch(self, metrics: dict, scores: dict[str, np.ndarray] | None = None) -> None:
        """Append one epoch: ``metrics`` must hold ``epoch`` (>= 1, after the last logged one); ``scores`` maps
        signal names to ``(N,)``."""
        self._check_lock()
        epoch = metrics.get("epoch")
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 1:
            raise ValueError(f"Expected `metrics['epoch']` to be an integer >= 1; got {epoch!r}.")
        if self.rows and epoch <= self.rows[-1]["epoch"]:
            raise ValueError(
                f"Expected `metrics['epoch']` after the last logged epoch {self.rows[-1]['epoch']}; "
                f"got {epoch}."
            )
        arrays = {}
        for signal_name, arr in (scores or {}).items():
            arr = np.asarray(arr, dtype=np.float32)
            if arr.shape != (self.num_samples,):
                raise ValueError(
                    f"Expected scores[{signal_name!r}] of shape ({self.num_samples},) indexed by sample "
                    f"id; got shape={arr.shape}."
                )
            arrays[signal_name] = arr
        for signal_name, arr in arrays.items():
            save_npy_atomic(self.path / score_file(signal_name, epoch), arr)
        # Scores first, then the metrics row: a metrics row always has its scores on disk.
        self.rows.append(_jsonable(metrics))
        try:
            self._rewrite_metrics()
        except BaseException:
            self.rows.pop()
            raise

    def write_array(self, name: str, array) -> None:
        """Write ``RUN/<name>.npy`` atomically (e.g. ``source_index``)."""
        self._check_lock()
        save_npy_atomic(self.path / f"{name}.npy", np.asarray(array))

    def write_labels(self, labels) -> None:
        """Write (or replace) ``labels.npy``: ``(N,)`` training labels by sample id, ``-1`` where not known."""
        self._check_lock()
        labels = np.asarray(labels).astype(np.int64)
        if labels.shape != (self.num_samples,):
            raise ValueError(f"Expected `labels` of shape ({self.num_samples},); got shape={labels.shape}.")
        save_npy_atomic(self.path / "labels.npy", labels)

    def write_previews(self, sample_ids, inputs) -> None:
        """Store inputs of some samples (images (K, H, W[, 3]) or 1-D signals (K, L)) for thumbnails."""
        self._check_lock()
        ids = np.asarray(sample_ids, dtype=np.int64)
        inputs = np.asarray(inputs)
        if ids.ndim != 1 or inputs.shape[:1] != ids.shape or inputs.ndim not in (2, 3, 4):
            raise ValueError(
                f"Expected `sample_ids` (K,) and `inputs` (K, L), (K, H, W) or (K, H, W, 3); "
                f"got {ids.shape} and {inputs.shape}."
            )
        save_npy_atomic(self.path / "preview_ids.npy", ids)
        save_npy_atomic(self.path / "previews.npy", inputs)

    def write_summary(self, summary: dict) -> None:
        self._check_lock()
        write_json_atomic(self.path / "summary.json", {"format": FORMAT, **summary})

    def finish(self) -> None:
        """Mark the run complete and release its lock."""
        self._check_lock()
        self.config["status"] = "complete"
        write_json_atomic(self.path / "config.json", self.config)
        self.close()

    def close(self) -> None:
        """Release the run's lock (the run stays as it is: complete, or resumable)."""
        self._lock.release()


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
        None if message is None else next((c for p, c in codes if message.startswith(p)), "kurtosis_pole")
    )
    out["gwa_guard_message"] = message
    mean, kurt = out.get("align_mean"), out.get("align_excess_kurtosis")
    value = None if mean is None or kurt is None else pearson_ratio(mean, kurt)
    out["gwa"] = value if value is not None and math.isfinite(value) else None
    return out


# ------------------------------------------------------------------------------------------------ reading


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc}); expected {what}.") from None


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
    raw = metrics_path.read_bytes().decode("utf-8", errors="replace")
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
        except ValueError:
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
    summary: dict | None
    labels: np.ndarray | None
    clean_labels: np.ndarray | None
    noise_mask: np.ndarray | None
    preview_ids: np.ndarray | None = None
    previews: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
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

    def signals(self) -> list[str]:
        return sorted({f.stem.rsplit("_", 1)[0] for f in (self.path / SCORES_DIR).glob("*.npy")})

    def scores(self, epoch: int, signal: str = "alignment") -> np.ndarray:
        f = self.path / score_file(signal, epoch)
        if not f.exists():
            raise RunDirError(f"{self.path} has no {signal!r} scores for epoch {epoch} ({f.name}).")
        return load_array(f, self.num_samples)

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


def load_array(path, length: int | None = None) -> np.ndarray:
    """A ``.npy`` file of the run (never a pickle); with ``length``, it must have shape ``(length, ...)``."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RunDirError(f"{path} is not a readable .npy array of numbers ({exc}).") from None
    if length is not None and (arr.ndim == 0 or arr.shape[0] != length):
        raise RunDirError(
            f"{path}: expected {length} rows (num_samples in config.json); got shape {arr.shape}."
        )
    return arr


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
    config = read_config(path)
    scan = scan_metrics(path)
    problems = [scan.describe()] if scan.problems else []
    epochs = [r["epoch"] for r in scan.rows]
    summary_path = path / "summary.json"
    summary = None
    if summary_path.exists():
        summary = _check_summary(path, _read_json(summary_path, "the run's summary"), epochs, problems)
    n = config.get("num_samples")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    def opt(name, length=n):
        f = path / f"{name}.npy"
        return load_array(f, length) if f.exists() else None

    preview_ids = opt("preview_ids", None)
    previews = opt("previews", None if preview_ids is None else len(preview_ids))
    for message in problems:
        warnings.warn(message, RunDirWarning, stacklevel=2)
    metrics = [upgrade_row(r, config["format"]) for r in scan.rows]
    return Run(
        path=path,
        config=config,
        metrics=metrics,
        summary=summary,
        labels=opt("labels"),
        clean_labels=opt("clean_labels"),
        noise_mask=opt("noise_mask"),
        preview_ids=preview_ids,
        previews=previews,
        problems=problems,
    )
