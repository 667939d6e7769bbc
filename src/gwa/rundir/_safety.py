"""Reading a shared run directory safely: no links where gwa writes, no special files, no unbounded reads.

A run directory may come from a colleague or the internet. Its fixed entries must be what gwa made them (a
regular file, a real folder): a link would send a write outside the run (``report -> ~/.config``) or a delete
into someone else's folder (``checkpoints -> ~/models``). Every file gwa reads must be a regular file of bounded
size, checked with ``fstat`` on a descriptor opened with ``O_NONBLOCK`` (a FIFO would block the open, and
``/dev/zero`` never ends).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from gwa.rundir._errors import RunDirError
from gwa.rundir._format import CHECKPOINT_DIR, LOCK_FILE, OWN_FILES, REPORT_DIR, SCORES_DIR

#: Caps on what a reader loads: a JSON file of a run is a few KB (a long run's metrics.jsonl a few MB), a
#: ``.npy`` of a run one value (or one preview) per sample.
MAX_JSON_BYTES = 64 * 2**20
MAX_NPY_BYTES = 8 * 2**30
#: Containers nested deeper than this in a JSON file are refused (gwa writes depth 3 at most).
MAX_JSON_DEPTH = 200

_FOLDERS = (SCORES_DIR, CHECKPOINT_DIR, REPORT_DIR)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_run_tree(path) -> None:
    """Raise :class:`RunDirError` when an entry gwa reads or writes in run directory ``path`` is a link or
    of the wrong kind: the folders ``scores/``, ``checkpoints/``, ``report/`` and the files gwa writes at the
    top (``config.json``, ``metrics.jsonl``, ..., ``gwa.lock``). The run directory itself may be a link."""
    path = Path(path)
    for name, want_dir in [*((f, True) for f in _FOLDERS), *((f, False) for f in (*OWN_FILES, LOCK_FILE))]:
        try:
            mode = os.lstat(path / name).st_mode
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return  # ``path`` is a file: the callers say so in their own words
        ok = stat.S_ISDIR(mode) if want_dir else stat.S_ISREG(mode)
        if not ok:
            expected = "a folder" if want_dir else "a regular file"
            raise RunDirError(
                f"Refusing to use run directory {path}: {path / name} is {_kind(mode)}; expected {expected}. "
                f"gwa never follows links or reads special files in a run directory (a shared run could "
                f"send its writes or deletes elsewhere); replace it with {expected} or remove it."
            )


@contextlib.contextmanager
def open_regular(path, *, cap: int, follow_links: bool = False) -> Iterator[IO[bytes]]:
    """``path`` opened for reading, after ``fstat`` shows a regular file of at most ``cap`` bytes. The open itself
    cannot block: ``O_NONBLOCK`` makes a FIFO's open return at once. A link at ``path`` (its last component) is
    refused unless ``follow_links`` (a run's files are gwa's own, never links; a dataset's may be).

    Raises:
        RunDirError: naming the file, when it is a link (unless followed), a FIFO, a device, a socket or a folder,
            or larger than ``cap``.
        OSError: when it cannot be opened (missing, permissions).
    """
    path = Path(path)
    flags = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | (0 if follow_links else _NOFOLLOW))
    except OSError as exc:
        if exc.errno != errno.ELOOP or follow_links:
            raise
        raise RunDirError(
            f"Refusing to read {path}: it is a symbolic link; expected a regular file (gwa does not follow "
            f"links in a run directory)."
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunDirError(
                f"Refusing to read {path}: it is {_kind(info.st_mode)}; expected a regular file."
            )
        if info.st_size > cap:
            raise RunDirError(
                f"Refusing to read {path}: it holds {info.st_size} bytes; expected at most {cap} "
                f"(the cap for this file)."
            )
        if _NONBLOCK:
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_regular(path, *, cap: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path``: a regular file of at most ``cap`` bytes (see :func:`open_regular`)."""
    with open_regular(path, cap=cap) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:  # it grew while read
        raise RunDirError(f"Refusing to read {path}: it holds more than {cap} bytes (the cap for this file).")
    return data


def check_json_depth(value, where) -> None:
    """Raise :class:`RunDirError` when ``value`` (parsed JSON) nests deeper than :data:`MAX_JSON_DEPTH`."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise RunDirError(
                f"{where}: nested more than {MAX_JSON_DEPTH} levels deep; expected a run's JSON."
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def load_npy(path, *, cap: int = MAX_NPY_BYTES) -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` of a regular file of at most ``cap`` bytes (see :func:`read_regular`)."""
    with open_regular(path, cap=cap) as fh:
        return np.load(fh, allow_pickle=False)
