"""Checkpoint bookkeeping shared by the training backends.

A checkpoint ``tag`` (``last``, ``best_<criterion>``) is committed in one step (:func:`commit`): the backend's
file is written under a new name holding the epoch (``last-0005.pt``), then ``<tag>.json`` is atomically
replaced to name it, then older files of the tag are removed. The JSON is the commit point, so a kill at any
moment leaves ``<tag>.json`` naming a complete file of the epoch it states. The runner reads
:func:`marked_epoch` to know where a resumed run restarts, without knowing the backend's format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from gwa.rundir import (
    CHECKPOINT_DIR,
    RunDirError,
    check_run_tree,
    is_own_checkpoint,
    parse_json,
    read_regular,
    write_atomic,
    write_json_atomic,
)


def checkpoint_dir(run_dir) -> Path:
    d = Path(run_dir) / CHECKPOINT_DIR
    check_run_tree(run_dir)  # a checkpoints/ link would send writes and deletes outside the run
    d.mkdir(parents=True, exist_ok=True)
    return d


def mark(run_dir, tag: str, *, epoch: int, backend: str, file: str) -> None:
    """Record that ``checkpoints/<file>`` holds epoch ``epoch`` (1-based) as checkpoint ``tag`` (last, best_gwa)."""
    write_json_atomic(
        checkpoint_dir(run_dir) / f"{tag}.json", {"epoch": int(epoch), "backend": backend, "file": file}
    )


def commit(
    run_dir, tag: str, *, epoch: int, backend: str, suffix: str, write: Callable[[IO[bytes]], object]
) -> Path:
    """Save checkpoint ``tag`` of ``epoch``: ``write(fh)`` fills the file; returns its path."""
    folder = checkpoint_dir(run_dir)
    name = f"{tag}-{int(epoch):04d}{suffix}"
    write_atomic(folder / name, write)
    mark(run_dir, tag, epoch=epoch, backend=backend, file=name)
    for (
        old
    ) in folder.iterdir():  # superseded (or pre-commit) files of this tag; a user's last-backup.pt stays
        if old.name != name and is_own_checkpoint(old.name, tag, suffix):
            old.unlink(missing_ok=True)
    return folder / name


def read_mark(run_dir, tag: str) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_DIR / f"{tag}.json"
    if not path.exists():
        return None
    info = parse_json(read_regular(path), path, "the checkpoint's epoch and file")
    epoch = info.get("epoch") if isinstance(info, dict) else None
    file = info.get("file") if isinstance(info, dict) else None
    if (
        not isinstance(epoch, int)
        or isinstance(epoch, bool)
        or epoch < 1
        or not isinstance(file, str)
        or Path(file).name != file
        or not isinstance(info.get("backend"), str)
    ):
        raise RunDirError(
            f"{path}: expected {{'epoch': int >= 1, 'backend': str, 'file': a file name in "
            f"{CHECKPOINT_DIR}/}}; got {info!r}."
        )
    return info


def marked_file(run_dir, tag: str = "last") -> Path:
    """The file checkpoint ``tag`` names; raises :class:`RunDirError` when it is missing."""
    info = read_mark(run_dir, tag)
    if info is None:
        raise RunDirError(f"{Path(run_dir)} has no checkpoint {tag!r} ({CHECKPOINT_DIR}/{tag}.json).")
    path = Path(run_dir) / CHECKPOINT_DIR / info["file"]
    if not path.exists():
        raise RunDirError(
            f"{Path(run_dir) / CHECKPOINT_DIR / (tag + '.json')} names {info['file']}, which does not exist."
        )
    return path


def marked_epoch(run_dir, tag: str = "last") -> int | None:
    info = read_mark(run_dir, tag)
    return None if info is None else int(info["epoch"])


@contextlib.contextmanager
def restoring(path) -> Iterator[None]:
    """Restore a run's state from checkpoint ``path`` inside this block: a checkpoint that loads but does not fit
    (a missing key, another model's shapes, a list instead of a dict, another RNG layout) becomes one
    ``ValueError`` naming the file and the part, instead of a traceback from deep inside the framework."""
    try:
        yield
    except KeyError as exc:
        raise ValueError(
            f"Cannot resume from {path}: the checkpoint has no {exc.args[0]!r} entry (a checkpoint of "
            f"another program or gwa version?); start a new run or restore the file."
        ) from None
    except (TypeError, RuntimeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        if str(exc).startswith(("Cannot resume", "Refusing to load")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ValueError(
            f"Cannot resume from {path}: the checkpoint does not fit this run ({type(exc).__name__}: "
            f"{first}); was the model or the software changed since it was written? Start a new run or "
            f"restore the file."
        ) from None


def torch_writer(obj) -> Callable[[IO[bytes]], None]:
    """``write(fh)`` for :func:`commit` that saves ``obj`` with ``torch.save``.

    It serialises to memory first: torch reports a full disk as a ``RuntimeError`` ('unexpected pos'), while a
    plain ``write`` raises ``OSError(ENOSPC)``, which the command line reports as one clear line.
    """
    import io

    import torch

    def write(fh) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fh.write(buffer.getbuffer())

    return write
