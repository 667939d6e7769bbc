"""What the Hugging Face callback writes beside the ``Trainer``'s own files: its state per rank inside each
checkpoint folder (read back, safely, on resume) and the best epoch's model folder (swapped in whole).

Both are written so that a crash or a full disk leaves the previous file or folder intact.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import torch
from gwa.rundir import write_atomic
from gwa.torch._safe_load import load_weights_only

#: File name (per rank) of the callback's state inside a checkpoint folder.
STATE_FILE = "gwa_callback_rank{rank}.pt"
#: Folder (in ``output_dir``) of the best epoch's model, by default.
BEST_DIR = "gwa-best"


def write_state(path: Path, state: dict) -> None:
    """Write the callback's ``state`` to ``path`` atomically."""
    buffer = io.BytesIO()  # serialised first: a full disk then fails as OSError, not torch's RuntimeError
    torch.save(state, buffer)
    write_atomic(path, lambda fh: fh.write(buffer.getbuffer()))


def read_state(path: Path) -> dict:
    """The callback's state, loaded with ``weights_only=True``: a shared checkpoint folder cannot run code."""
    return load_weights_only(
        path, "cpu", refusal=f"GWATrainerCallback: refusing to load {path}: expected tensors and plain values"
    )


def save_best_model(folder: Path, model, processor, *, epoch: int, monitor: str, value: float) -> None:
    """Save ``model`` (``save_pretrained``, else its ``state_dict``), the ``processor`` (tokenizer, image
    processor; None: none) and ``gwa_best.json`` (epoch, criterion, value) into ``folder``, replacing the previous
    best whole."""
    # Written beside the folder, then swapped in: a crash while saving leaves the previous best intact
    # (in ``folder`` or, between the two renames, in ``<folder>.old``).
    staging, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(staging)
        else:
            torch.save(model.state_dict(), staging / "pytorch_model.bin")
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(staging)
        record = {"epoch": epoch, "monitor": monitor, "value": value if math.isfinite(value) else None}
        (staging / "gwa_best.json").write_text(json.dumps(record) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
