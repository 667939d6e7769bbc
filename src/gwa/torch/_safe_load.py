"""Loading a torch file that another user may have written, without running its code."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def load_weights_only(path: Path | str, map_location, *, refusal: str) -> dict:
    """``torch.load(path, weights_only=True)``, allowing gwa's own :class:`~gwa.GuardCode` (the tracker's history
    names guarded epochs by it); anything else that is not tensors and plain values raises ``ValueError`` starting
    with ``refusal``, which names the caller and the file."""
    from gwa import GuardCode

    try:
        with torch.serialization.safe_globals([GuardCode]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ValueError(f"{refusal} (torch.load with weights_only=True); {lines[-1][:300]}") from None
