"""Atomic writes: a temporary file, synced, then renamed, so that a kill leaves each file old or new.

Run directories are shared (a lab's NFS, a colleague's tarball), so a write never follows a link planted in one:
the temporary file gets a fresh random name and is created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` next to its target
(an existing file or link of that name makes the open fail instead of writing through it), and ``os.replace``
swaps the directory entry itself, never a link's target. Unique names also keep two writers of one output from
mixing their bytes: each commits a whole file of its own.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Test-only fault injection: with this variable set to k, the process SIGKILLs itself at its k-th atomic
#: write, after the temporary file is synced and before the rename that commits it (tests/test_faults.py).
FAULT_ENV = "GWA_FAULT_KILL_AT_WRITE"
_writes_done = 0


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


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


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new, empty file next to ``path`` with a random name, opened without following any link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)  # the umask applies, as for any file the user writes
        except FileExistsError:  # pragma: no cover - 2**64 names: only a planted entry collides
            continue
    raise FileExistsError(f"Could not create a temporary file next to {path}.")  # pragma: no cover


def write_atomic(path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` so that it is either its old or its new content after any crash.

    ``write(fh)`` fills a new temporary file next to ``path`` (``<name>.<random>.tmp``, created with
    ``O_EXCL|O_NOFOLLOW``); it is synced, renamed over ``path`` and the directory entry synced. A link at
    ``path`` is replaced by the file, never followed. On an error (a full disk) the temporary file is removed
    and the error raised; ``path`` is untouched.
    """
    path = Path(path)
    tmp, fd = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
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
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda fh: fh.write(text.encode()))


def save_npy_atomic(path, array: np.ndarray) -> None:
    write_atomic(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))
