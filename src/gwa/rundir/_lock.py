"""The lock: one process writes a run at a time."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from types import ModuleType

from gwa.rundir._errors import RunDirError
from gwa.rundir._format import LOCK_FILE
from gwa.rundir._safety import check_run_tree
from gwa.rundir._target import check_directory

fcntl: ModuleType | None  # None where the platform has no fcntl
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, everything else holds
    fcntl = None

log = logging.getLogger("gwa.rundir")  # the name the CLI's log lines have always shown

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
        # Never through a link (a planted gwa.lock -> ~/.bashrc would be truncated), never blocking on a FIFO.
        check_run_tree(self.path)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path / LOCK_FILE, flags, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise RunDirError(
                f"Refusing to use run directory {self.path}: {self.path / LOCK_FILE} is a symbolic link; "
                f"expected a regular file (gwa never writes through links in a run directory)."
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(
                f"Refusing to use run directory {self.path}: {self.path / LOCK_FILE} is not a regular file."
            )
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
