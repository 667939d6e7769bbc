"""The torch adapter's checks: :func:`gwa.torch.alignment`'s inputs (eager), and the tracker's: its arguments,
each ``update()``'s inputs, what the device records per step, state-dict counts.

:class:`gwa.torch.GWATracker` runs these on its checked path (the epoch's first ``update()``, and any call unlike
the last checked one); a call with the same shapes, dtypes and devices skips them (``_tracker.py``). Checks that
would need a host read per step run on the device instead (:func:`soft_target_violations`, the sample-id
range) and are read at ``end_epoch``.
"""

from __future__ import annotations

import numpy as np

import torch
from gwa._validation import check_class_id_range, check_shapes, describe

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


# ------------------------------------------------------------------------------ alignment()'s eager checks
def check_tensor_inputs(logits, targets, embeddings, weight, bias=None, head_output=None) -> bool:
    """Eager validation of one :func:`alignment` call (may synchronise); returns True for soft targets."""
    named = (
        ("logits", logits),
        ("targets", targets),
        ("embeddings", embeddings),
        ("weight", weight),
        ("bias", bias),
        ("head_output", head_output),
    )
    for name, t in named:
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"Expected `{name}` to be a torch.Tensor; got {type(t).__name__}.")
    floats = (
        ("logits", logits),
        ("embeddings", embeddings),
        ("weight", weight),
        ("bias", bias),
        ("head_output", head_output),
    )
    for name, t in floats:
        if t is not None and not t.is_floating_point():
            raise TypeError(f"Expected `{name}` to be a floating-point tensor; got {describe(t)}.")
    devices = {t.device for _, t in named if t is not None}
    if len(devices) > 1:
        where = ", ".join(f"{name}: {t.device}" for name, t in named if t is not None)
        raise ValueError(f"Expected all inputs on one device; got {where}.")
    soft = check_shapes(
        logits.shape, targets.shape, embeddings.shape, weight.shape, None if bias is None else bias.shape
    )
    if soft:
        check_soft_target_tensor(targets)
    else:
        check_class_id_tensor(targets, logits.shape[1])
    if head_output is not None and tuple(head_output.shape) != tuple(logits.shape):
        raise ValueError(
            f"Expected `head_output` of shape (N, C) = {tuple(logits.shape)} like `logits`; got "
            f"shape={tuple(head_output.shape)}."
        )
    for name, t in floats:
        if t is not None and not _all_finite(t):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(f"Expected finite `{name}`; got {bad} NaN/Inf value(s) in {describe(t)}.")
    if head_output is not None and head_output.shape[0]:
        _check_head_output_row(head_output, embeddings, weight, bias)
    return soft


#: Classes of the first row of ``head_output`` that :func:`alignment` checks against ``W x_0 (+ b)``.
HEAD_OUTPUT_CHECKED_CLASSES = 16


def _check_head_output_row(head_output, embeddings, weight, bias) -> None:
    """``head_output[0, :k]`` must be ``W[:k] x_0`` (``+ b[:k]``): k dot products, not the N x C product."""
    k = HEAD_OUTPUT_CHECKED_CLASSES
    x0 = embeddings[0].detach().double()
    expected = weight[:k].detach().double() @ x0
    if bias is not None:
        expected = expected + bias[:k].detach().double()
    got = head_output[0, :k].detach().double()
    error = float(torch.linalg.vector_norm(got - expected))
    scale = float(torch.linalg.vector_norm(expected))
    if error > 1e-2 * scale + 1e-30:
        with_bias = " + bias" if bias is not None else " (without the head's bias: pass logits - head.bias)"
        raise ValueError(
            f"Expected `head_output` to be embeddings @ weight.T{with_bias} from the same forward pass; got a "
            f"first row {error:.3g} away from that product (norm {scale:.3g}, first {k} classes)."
        )


def _all_finite(t: torch.Tensor) -> bool:
    """True if every entry is finite: one reduction, no temporary; confirmed entrywise if the sum overflows."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_class_id_tensor(targets: torch.Tensor, num_classes: int) -> None:
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"Expected `targets` of shape (N,) to hold integer class ids; got {describe(targets)}."
        )
    check_class_id_range(int(targets.min()), int(targets.max()), num_classes)


def check_soft_target_tensor(targets: torch.Tensor, atol: float = 1e-4) -> None:
    if not targets.is_floating_point():
        raise TypeError(
            f"Expected soft `targets` of shape (N, C) to be floating point; got {describe(targets)}."
        )
    t = targets.detach().double()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"Expected finite soft `targets`; got NaN/Inf in {describe(targets)}.")
    if float(t.min()) < -atol:
        raise ValueError(
            f"Expected soft `targets` to be probabilities (>= 0); got minimum {float(t.min()):.6g}."
        )
    sums = t.sum(dim=1)
    worst = int((sums - 1.0).abs().argmax())
    if abs(float(sums[worst]) - 1.0) > atol:
        raise ValueError(
            "Expected soft `targets` rows to sum to 1 (probabilities, e.g. label smoothing or mixup); "
            f"got a row summing to {float(sums[worst]):.6g}."
        )


def class_id_error(error: Exception, num_classes: int) -> Exception:
    """The kernel's indexing error for a class id out of range, as a ``ValueError`` naming `targets`."""
    if "out of bounds" not in str(error) and "out of range" not in str(error):
        return error
    return ValueError(
        f"Expected `targets` class ids in [0, {num_classes - 1}] (C={num_classes} from logits); got "
        "an id out of range."
    )
