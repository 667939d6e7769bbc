"""The arrays of a run directory, loaded with their kinds and shapes checked: one error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gwa.rundir._errors import RunDirError
from gwa.rundir._safety import load_npy

_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats"}


def load_array(path, length: int | None = None, *, kinds: str = "biuf") -> np.ndarray:
    """A ``.npy`` file of the run (never a pickle, never a special file); with ``length``, it must have shape
    ``(length, ...)``; its dtype kind must be one of ``kinds`` (numpy's letters: b, i, u, f)."""
    path = Path(path)
    try:
        arr = load_npy(path)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, RunDirError):
            raise
        raise RunDirError(f"{path} is not a readable .npy array of numbers ({exc}).") from None
    if arr.dtype.kind not in kinds:
        wanted = " or ".join(dict.fromkeys(_KIND_NAMES[k] for k in kinds))
        raise RunDirError(f"{path}: expected an array of {wanted}; got dtype {arr.dtype}.")
    if length is not None and (arr.ndim == 0 or arr.shape[0] != length):
        raise RunDirError(
            f"{path}: expected {length} rows (num_samples in config.json); got shape {arr.shape}."
        )
    return arr


def _integral(arr: np.ndarray, path: Path, what: str, *, low: int) -> np.ndarray:
    """``arr`` as int64 when every value is an integer >= ``low`` (labels may be stored as floats)."""
    if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise RunDirError(f"{path}: expected {what} (integers); got non-integer or non-finite values.")
    if arr.size and (arr.min() < low or (arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max)):
        raise RunDirError(f"{path}: expected {what} >= {low}; got values from {arr.min()} to {arr.max()}.")
    return arr.astype(np.int64)


def load_run_arrays(path: Path, n: int | None) -> dict:
    """The optional per-sample arrays of run ``path`` (``num_samples`` ``n``), as :class:`Run` fields:
    labels and clean labels as int64 class ids (or -1), the noise mask as booleans, previews and their ids."""

    def opt(name: str, length: int | None, kinds: str) -> np.ndarray | None:
        f = path / f"{name}.npy"
        arr = load_array(f, length, kinds=kinds) if f.exists() else None
        if arr is not None and arr.ndim != 1 and name != "previews":
            raise RunDirError(f"{f}: expected a 1-D array; got shape {arr.shape}.")
        return arr

    def labels(name: str) -> np.ndarray | None:
        arr = opt(name, n, "iuf")
        return None if arr is None else _integral(arr, path / f"{name}.npy", "class ids or -1", low=-1)

    noise_mask = opt("noise_mask", n, "biu")
    if noise_mask is not None and noise_mask.dtype.kind != "b":
        if not np.isin(noise_mask, (0, 1)).all():  # a mask of strings would count every sample as noisy
            raise RunDirError(f"{path / 'noise_mask.npy'}: expected booleans (or 0/1); got other values.")
        noise_mask = noise_mask.astype(bool)
    preview_ids = opt("preview_ids", None, "iu")
    if preview_ids is not None:
        preview_ids = _integral(preview_ids, path / "preview_ids.npy", "sample ids", low=0)
        if n is not None and preview_ids.size and preview_ids.max() >= n:
            raise RunDirError(
                f"{path / 'preview_ids.npy'}: expected sample ids below num_samples={n}; "
                f"got {preview_ids.max()}."
            )
    previews = opt("previews", None if preview_ids is None else len(preview_ids), "biuf")
    # One preview per row as the report draws it: (L,) signals, (H, W) or (H, W, 1|3) or (1|3, H, W) images.
    image = (
        previews is not None
        and previews.ndim == 4
        and (previews.shape[1] in (1, 3) or previews.shape[-1] in (1, 3))
    )
    if previews is not None and not (previews.ndim in (2, 3) or image):
        raise RunDirError(
            f"{path / 'previews.npy'}: expected (K, L) signals or (K, H, W), (K, H, W, C) or (K, C, H, W) images "
            f"with C = 1 or 3; got shape {previews.shape}."
        )
    return {
        "labels": labels("labels"),
        "clean_labels": labels("clean_labels"),
        "noise_mask": noise_mask,
        "preview_ids": preview_ids,
        "previews": previews,
    }
