"""Where a new run may go: a new or empty directory, or (with ``overwrite``) a gwa run, never other data."""

from __future__ import annotations

import json
from pathlib import Path

from gwa.rundir._errors import RunDirError
from gwa.rundir._format import LOCK_FILE, SCORES_DIR, is_own_temporary, own_files
from gwa.rundir._safety import MAX_JSON_BYTES, check_run_tree, read_regular


def check_directory(path) -> None:
    """Raise unless ``path`` is a directory or does not exist yet (``--out`` naming a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"Expected a run directory; {path} is a file (choose another --out).")


def is_gwa_run(path) -> bool:
    """Whether ``path`` holds a gwa run: a ``config.json`` object with ``format`` and ``gwa_version``."""
    try:
        config = json.loads(read_regular(Path(path) / "config.json", cap=MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):  # RunDirError is a ValueError
        return False
    return isinstance(config, dict) and "format" in config and "gwa_version" in config


def _entries(path: Path) -> list[str]:
    """What a directory holds besides what a run killed before its first commit leaves: the lock file, gwa's
    temporary files and an empty ``scores/``."""
    if not path.is_dir():
        return []
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name != LOCK_FILE
        and not is_own_temporary(p.name)
        and not (p.name == SCORES_DIR and p.is_dir() and not p.is_symlink() and not any(p.iterdir()))
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
    check_run_tree(path)
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
