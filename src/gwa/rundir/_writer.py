"""The writer: a run directory written as training goes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gwa.rundir._atomic import jsonable, save_npy_atomic, write_atomic, write_json_atomic
from gwa.rundir._classes import read_class_rows, write_class_rows
from gwa.rundir._errors import RunDirError
from gwa.rundir._format import FORMAT, SCORES_DIR, own_files, own_score_epoch, score_file
from gwa.rundir._lock import RunLock
from gwa.rundir._reader import read_config, scan_metrics
from gwa.rundir._safety import check_run_tree
from gwa.rundir._summary import RunSummary, run_summary
from gwa.rundir._target import check_writable

log = logging.getLogger("gwa.rundir")  # the name the CLI's log lines have always shown


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
            check_run_tree(self.path)
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
        self.class_rows: list[dict] = []  # classes.jsonl's rows (per-class evidence by epoch)
        if resume:
            self.rows = self._rows_to_resume(resume_epoch)
            self.class_rows = read_class_rows(self.path, [r["epoch"] for r in self.rows])[0]
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
            # The metrics first, then the deletes: a kill in between leaves no row without its scores.
            self._rewrite_metrics()
            if (self.path / "classes.jsonl").exists():
                write_class_rows(self.path, self.class_rows)
            self._drop_leftovers(resume_epoch)
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
            torn = scan.problems[0].text + "\n"
            write_atomic(
                aside, lambda fh: fh.write(torn.encode())
            )  # replaces a planted link, never follows it
            log.warning(
                "gwa: %s: moved the torn last line of metrics.jsonl (line %d) to %s.",
                self.path,
                scan.problems[0].line,
                aside.name,
            )
        rows = scan.rows
        if resume_epoch is not None:
            rows = [r for r in rows if r["epoch"] <= resume_epoch]
        return rows

    def _drop_leftovers(self, resume_epoch: int | None) -> None:
        """Delete what a killed writer left: its temporary files, and the score files of epochs after
        ``resume_epoch`` (redone now). Only names gwa writes are touched (``scores/notes_2024.txt`` stays)."""
        for f in own_files(self.path):
            epoch = own_score_epoch(f.name) if f.parent.name == SCORES_DIR else None
            later = resume_epoch is not None and epoch is not None and epoch > resume_epoch
            if ".tmp" in f.name or later:  # .tmp: a write that crashed before its rename
                f.unlink(missing_ok=True)

    def _check_lock(self) -> None:
        if not self._lock.held:
            why = "a later writer in this process took it over" if self._lock.superseded else "it was closed"
            raise RunDirError(f"This RunWriter no longer holds {self.path}: {why}.")

    def _rewrite_metrics(self) -> None:
        # The whole file each epoch (a few KB): a kill leaves the old or the new file, never a torn line.
        text = "".join(json.dumps(jsonable(r)) + "\n" for r in self.rows)
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
        self.rows.append(jsonable(metrics))
        try:
            self._rewrite_metrics()
        except BaseException:
            self.rows.pop()
            raise

    def log_classes(self, row: dict) -> None:
        """Write the per-class evidence of the last logged epoch (``{"epoch": e, **ClassEvidence.to_dict()}``,
        :func:`gwa.rundir.class_row`) to ``classes.jsonl``, after its metrics row."""
        self._check_lock()
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if not self.rows or epoch != self.rows[-1]["epoch"]:
            last = self.rows[-1]["epoch"] if self.rows else None
            raise ValueError(
                f"Expected the per-class row of the last logged epoch ({last}); got epoch {epoch!r}."
            )
        self.class_rows = [r for r in self.class_rows if r["epoch"] < epoch] + [jsonable(row)]
        write_class_rows(self.path, self.class_rows)

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

    def write_summary(self, summary: Mapping[str, Any]) -> RunSummary:
        """Write ``summary.json``: ``summary``'s fields of :class:`gwa.rundir.RunSummary`, the others filled
        (:func:`gwa.rundir.run_summary`); returns what was written. An unknown key raises ``ValueError``."""
        self._check_lock()
        complete = run_summary({**summary, "format": FORMAT})
        write_json_atomic(self.path / "summary.json", complete)
        return complete

    def finish(self) -> None:
        """Mark the run complete and release its lock."""
        self._check_lock()
        self.config["status"] = "complete"
        write_json_atomic(self.path / "config.json", self.config)
        self.close()

    def close(self) -> None:
        """Release the run's lock (the run stays as it is: complete, or resumable)."""
        self._lock.release()
