"""Atomic writes: a temporary file, synced, then renamed, so that a kill leaves each file old or new."""

from __future__ import annotations

import json
import math
import os
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
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda fh: fh.write(text.encode()))


def save_npy_atomic(path, array: np.ndarray) -> None:
    write_atomic(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))
