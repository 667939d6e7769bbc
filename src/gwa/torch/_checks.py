"""The tracker's checks: its arguments, each ``update()``'s inputs, what the device records per step, state dicts.

:class:`gwa.torch.GWATracker` runs these on its checked path (the epoch's first ``update()``, and any call unlike
the last checked one); a call with the same shapes, dtypes and devices skips them (``_tracker.py``). Checks that
would need a host read per step run on the device instead (:func:`soft_target_violations`, the sample-id
range) and are read at ``end_epoch``.
"""

from __future__ import annotations

import numpy as np

import torch
from gwa._validation import describe
from gwa.torch._kernel import class_id_error

#: Tolerance of the soft-target checks (rows >= -tol, |row sum - 1| <= tol), as in :func:`gwa.alignment`.
SOFT_TARGET_ATOL = 1e-4
#: ``GWATracker(score_dtype=...)``: the storage dtypes it accepts, by object or by name.
SCORE_DTYPES = {
    torch.float32: torch.float32,
    torch.float16: torch.float16,
    "float32": torch.float32,
    "float16": torch.float16,
}


def check_tracker_args(num_samples, score_dtype, defer, unpaired) -> None:
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0
    ):
        raise ValueError(f"Expected `num_samples` to be a positive int or None; got {num_samples!r}.")
    if score_dtype not in SCORE_DTYPES:
        raise ValueError(f"Expected `score_dtype` to be torch.float32 or torch.float16; got {score_dtype!r}.")
    if isinstance(defer, bool) or not isinstance(defer, int) or defer < 0:
        raise ValueError(
            f"Expected `defer` to be a non-negative int (update() calls scored together; 0: each "
            f"at once); got {defer!r}."
        )
    if unpaired not in ("raise", "skip"):
        raise ValueError(f"Expected `unpaired` to be 'raise' or 'skip'; got {unpaired!r}.")


def check_update_types(logits, targets, sample_ids, positions: bool | None) -> bool:
    """Types first, so that a rejected call leaves its capture for the corrected call; True for soft targets."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor; got {type(logits).__name__}.")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"Expected `targets` to be a torch.Tensor; got {type(targets).__name__}.")
    soft = targets.dim() == 2
    if soft and not targets.is_floating_point():
        raise TypeError(f"Expected soft `targets` (B, C) to be floating point; got {describe(targets)}.")
    if not soft and (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool):
        raise TypeError(
            f"Expected `targets` of shape (B,) to hold integer class ids; got {describe(targets)}."
        )
    if positions is not None and (sample_ids is None) != positions:
        raise ValueError(
            "Expected `sample_ids` in every update() of an epoch or in none; got "
            f"sample_ids={'None' if sample_ids is None else 'ids'} after updates "
            f"{'without' if positions else 'with'} them."
        )
    return soft


def check_class_ids(targets: torch.Tensor, num_classes: int) -> None:
    """The epoch's first batch of class ids, at once (one host read); later ones when their batch is scored."""
    bounds = targets.aminmax()
    if int(bounds.min) < 0 or int(bounds.max) >= num_classes:
        raise class_id_error(IndexError("out of bounds"), num_classes)


def check_sample_ids(
    sample_ids, batch: int, device: torch.device, num_samples: int | None, first: bool
) -> torch.Tensor:
    """``(B,)`` int64 ids on ``device``; their range at once for the epoch's first batch, else at ``end_epoch``."""
    ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.tensor(np.asarray(sample_ids))
    if ids.shape != (batch,):
        raise ValueError(f"Expected `sample_ids` of shape (B,) = ({batch},); got shape={tuple(ids.shape)}.")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"Expected integer `sample_ids`; got {describe(ids)}.")
    if ids.device != device or ids.dtype != torch.int64:
        ids = ids.to(device, torch.int64, non_blocking=True)
    if first and num_samples is not None:
        bounds = ids.aminmax()
        lo, hi = int(bounds.min), int(bounds.max)
        if lo < 0 or hi >= num_samples:
            raise ValueError(
                f"Expected `sample_ids` in [0, {num_samples - 1}] (num_samples={num_samples}); got an id out "
                f"of range ({lo if lo < 0 else hi})."
            )
    return ids


def ids_out_of_range(ids: list[torch.Tensor], num_samples: int) -> tuple[int, int, int] | None:
    """``(count, min, max)`` of the ids outside ``[0, num_samples)``, or None (one device sync)."""
    if not ids:
        return None
    flat = torch.cat([i.reshape(-1).long() for i in ids])
    bad = (flat < 0) | (flat >= num_samples)
    count = int(bad.sum())
    return (count, int(flat[bad].min()), int(flat[bad].max())) if count else None


def raise_ids_out_of_range(bad_ids: tuple[int, int, int], num_samples: int, epoch: int) -> None:
    count, lo, hi = bad_ids
    raise ValueError(
        f"Expected `sample_ids` in [0, {num_samples - 1}] (num_samples={num_samples});"
        f" got {count} id(s) out of range in epoch {epoch} (min {lo}, max {hi})."
    )


def soft_target_violations(t: torch.Tensor) -> torch.Tensor:
    """``(3,)`` int64 counts of finite rows that are negative, do not sum to 1, are multi-hot (no host read)."""
    finite = torch.isfinite(t).all(dim=1)
    sums = t.sum(dim=1)
    negative = (t.amin(dim=1) < -SOFT_TARGET_ATOL) & finite
    off = ((sums - 1.0).abs() > SOFT_TARGET_ATOL) & finite
    multi_hot = off & ((t == 0) | (t == 1)).all(dim=1)
    return torch.stack((negative, off, multi_hot)).sum(dim=1)


def raise_soft_target_violations(counts, epoch: int | None = None) -> None:
    negative, off, multi_hot = (int(c) for c in counts)
    if not (negative or off):
        return
    where = f" in epoch {epoch} (checked on the device, read at end_epoch)" if epoch is not None else ""
    if multi_hot:
        raise ValueError(
            f"Expected soft `targets` to be probability rows; got {multi_hot} multi-hot row(s){where} "
            "(several labels set to 1): GWA is defined for softmax cross-entropy, one label or one "
            "probability vector per sample, not for multi-label (BCE) targets."
        )
    if negative:
        raise ValueError(
            f"Expected soft `targets` to be probabilities (>= 0); got {negative} row(s) with negative "
            f"entries{where}."
        )
    raise ValueError(
        f"Expected soft `targets` rows to sum to 1 (probabilities, e.g. label smoothing or mixup); got "
        f"{off} row(s) that do not{where}."
    )


def invalid_state(what: str, got) -> None:
    raise ValueError(f"Invalid GWATracker state: expected {what}; got {got!r}.")


def state_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        invalid_state(f"`{name}` to be a non-negative int", value)
    return value
