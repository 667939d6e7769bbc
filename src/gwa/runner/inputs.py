"""Checks of what enters ``gwa train`` from files: class ids and pixels, refused or scaled where they are read.

A label out of range would otherwise surface as a traceback in the middle of epoch 1 (or, in an eval set, as a
silent 0% accuracy); an integer image type other than uint8 divided by 255 would turn into nearly white images.
Each check names the file (or option) it came from, what it got and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: PIL modes of 16-bit greyscale images (PNG, TIFF): scaled by 65535, not clipped at 255 by ``convert("RGB")``.
PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes kept as they are (8 bits per channel); every other 8-bit mode is converted to RGB.
PIL_8BIT_MODES = ("L", "RGB")


def class_ids(y, num_classes: int | None, where: str) -> np.ndarray:
    """``y`` as int64 class ids in ``[0, num_classes)``; a clear error naming ``where`` otherwise.

    The range is checked on the values as stored (uint64 2**64-1 is not -1, 1e10 is not wrapped) before the cast.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ValueError(
            f"Expected {where} to be integer class ids of shape (N,); got shape {y.shape}, dtype {y.dtype}."
        )
    if y.size:
        low, high = int(y.min()), int(y.max())
        top = None if num_classes is None else num_classes - 1
        if low < 0 or (top is not None and high > top) or high > np.iinfo(np.int64).max:
            expected = f"in [0, {top}]" if top is not None else ">= 0 (and < 2**63)"
            raise ValueError(f"Expected {where} to be class ids {expected}; got range [{low}, {high}].")
    return y.astype(np.int64)


def unit_pixels(x, where: str) -> np.ndarray:
    """Images or signals as float32: uint8 divided by 255, uint16 by 65535; floats as they are (finite only).

    Other integer types have no known full-scale value and are refused, as are booleans and complex numbers.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return (x / np.float32(255)).astype(np.float32)
    if x.dtype == np.uint16:
        return (x / np.float32(65535)).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"Expected {where} to hold finite values; got NaN or inf (dtype {x.dtype}).")
        return out
    raise ValueError(
        f"Expected {where} as uint8 (0..255), uint16 (0..65535) or float values; got dtype {x.dtype} "
        "(convert it to one of these with its full-scale value known)."
    )


def uint8_pixels(x, where: str) -> np.ndarray:
    """Pixel data that must be bytes (CIFAR batches, IDX images): integers in 0..255, else a clear error.

    ``np.asarray(float_data, dtype=np.uint8)`` would wrap 300.0 to 44 silently.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"Expected {where} to hold uint8 pixel values (0..255); got dtype {x.dtype}.")
    if x.size and (int(x.min()) < 0 or int(x.max()) > 255):
        raise ValueError(
            f"Expected {where} to hold pixel values in 0..255; got range [{int(x.min())}, {int(x.max())}]."
        )
    return x.astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """One image file as ``(H, W)`` or ``(H, W, 3)`` uint8, or ``(H, W)`` uint16 for 16-bit greyscale (its full
    range kept: :func:`unit_pixels` scales each by its dtype's maximum).

    A file PIL cannot read, or a mode without a known range (32-bit integer beyond 16 bits, float), is a
    ValueError naming the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in PIL_16BIT_MODES or mode == "I":
                a = np.asarray(im)
                if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
                    raise ValueError(
                        f"Expected {path} (PIL mode {mode}) to hold 16-bit values 0..65535; got range "
                        f"[{int(a.min())}, {int(a.max())}] (convert it to 8- or 16-bit first)."
                    )
                return a.astype(np.uint16)
            if mode == "F":
                raise ValueError(
                    f"Expected {path} to be an 8- or 16-bit image; got PIL mode F (32-bit float, no known "
                    "range): convert it to 8- or 16-bit first."
                )
            a = np.asarray(im if mode in PIL_8BIT_MODES else im.convert("RGB"))
    except (OSError, SyntaxError) as exc:  # PIL's errors for unreadable, truncated or unknown files
        raise ValueError(f"Cannot read image {path}: {exc}.") from None
    return a.astype(np.uint8)


def visible(paths) -> tuple[list[Path], list[Path]]:
    """(kept, hidden): names starting with '.' (``.ipynb_checkpoints``, ``.DS_Store``) are not data."""
    paths = list(paths)
    return [p for p in paths if not p.name.startswith(".")], [p for p in paths if p.name.startswith(".")]
