"""Checkpoint bookkeeping shared by the training backends.

A backend saves its own files under ``RUN/checkpoints/`` (``last.pt`` for torch, whatever the JAX backend
uses), atomically, and only then calls :func:`mark` so that ``last.json`` / ``best_<criterion>.json`` name the
epoch the file holds. The runner reads :func:`marked_epoch` to know where a resumed run restarts, without
knowing the backend's format.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(run_dir) -> Path:
    d = Path(run_dir) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def mark(run_dir, tag: str, *, epoch: int, backend: str, file: str) -> None:
    """Record that ``checkpoints/<file>`` holds epoch ``epoch`` (1-based) as checkpoint ``tag`` (last, best_gwa)."""
    path = checkpoint_dir(run_dir) / f"{tag}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"epoch": int(epoch), "backend": backend, "file": file}) + "\n")
    os.replace(tmp, path)


def read_mark(run_dir, tag: str) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_DIR / f"{tag}.json"
    return json.loads(path.read_text()) if path.exists() else None


def marked_epoch(run_dir, tag: str = "last") -> int | None:
    info = read_mark(run_dir, tag)
    return None if info is None else int(info["epoch"])


def clear(run_dir) -> None:
    """Remove all checkpoints (on --overwrite), so that no stale ``last`` can be resumed."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)


def save_torch_atomic(obj, path) -> None:
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
