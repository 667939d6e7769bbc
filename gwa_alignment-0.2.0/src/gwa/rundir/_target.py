"""Where a new run may go: a new or empty directory, or (with ``overwrite``) a gwa run, never other data."""

from __future__ import annotations

import json
from pathlib import Path

from gwa.rundir._errors import RunDirError
from gwa.rundir._format import LOCK_FILE, OWN_FILES, SCORES_DIR, own_files


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
