"""Input checks shared by the numpy core and the adapters.

Every public entry point validates once here, then calls an unchecked twin. Messages name the argument,
what arrived and what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def describe(x: Any) -> str:
    """A short 'shape=..., dtype=...' description of an array-like for error messages."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return f"type {type(x).__name__}"
    return f"shape={tuple(shape)}, dtype={dtype}"


def check_shapes(logits_shape, targets_shape, embeddings_shape, weight_shape, bias_shape=None) -> bool:
    """Check the shapes of one alignment call; return True if the targets are soft (N, C).

    Works on plain tuples so that numpy, torch and jax share one rule set.
    """
    logits_shape, targets_shape = tuple(logits_shape), tuple(targets_shape)
    embeddings_shape, weight_shape = tuple(embeddings_shape), tuple(weight_shape)
    if len(logits_shape) != 2:
        raise ValueError(f"Expected `logits` to have shape (N, C); got shape={logits_shape}.")
    n, c = logits_shape
    if n == 0:
        raise ValueError("Expected a non-empty batch; got `logits` with N=0 rows.")
    if c < 2:
        raise ValueError(f"Expected `logits` to have at least 2 classes (N, C>=2); got shape={logits_shape}.")
    if len(embeddings_shape) != 2 or embeddings_shape[0] != n:
        raise ValueError(
            f"Expected `embeddings` to have shape (N, D) with N == logits.shape[0] == {n}; "
            f"got embeddings.shape={embeddings_shape}."
        )
    d = embeddings_shape[1]
    if weight_shape != (c, d):
        hint = (
            " (pass the head weight as (C, D), torch's layout, not its transpose)"
            if weight_shape == (d, c)
            else ""
        )
        raise ValueError(
            f"Expected `weight` to have shape (C, D) = ({c}, {d}) from logits and embeddings; "
            f"got weight.shape={weight_shape}{hint}."
        )
    if bias_shape is not None and tuple(bias_shape) != (c,):
        raise ValueError(f"Expected `bias` to have shape (C,) = ({c},); got bias.shape={tuple(bias_shape)}.")
    if targets_shape == (n,):
        return False
    if targets_shape == (n, c):
        return True
    raise ValueError(
        f"Expected `targets` to be class ids of shape (N,) = ({n},) or probabilities of shape (N, C) = ({n}, {c}); "
        f"got targets.shape={targets_shape}."
    )


def check_numpy_inputs(logits, targets, embeddings, weight, bias=None):
    """Validate and convert numpy inputs; returns float64 arrays and whether the targets are soft."""
    logits = _float_array("logits", logits)
    embeddings = _float_array("embeddings", embeddings)
    weight = _float_array("weight", weight)
    bias = None if bias is None else _float_array("bias", bias)
    targets = np.asarray(targets)
    soft = check_shapes(
        logits.shape, targets.shape, embeddings.shape, weight.shape, None if bias is None else bias.shape
    )
    if soft:
        targets = _float_array("targets", targets)
        check_soft_targets(targets)
    else:
        if not np.issubdtype(targets.dtype, np.integer):
            # Only integral floats pass; bool, complex, strings and objects are not class ids.
            if (
                not np.issubdtype(targets.dtype, np.floating)
                or not np.all(np.isfinite(targets))
                or np.any(targets != np.round(targets))
            ):
                raise TypeError(
                    f"Expected `targets` of shape (N,) to hold integer class ids; got {describe(targets)}."
                )
            targets = targets.astype(np.int64)
        check_class_ids(targets, logits.shape[1])
    for name, arr in (("logits", logits), ("embeddings", embeddings), ("weight", weight), ("bias", bias)):
        if arr is not None and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"Expected finite `{name}`; got {bad} NaN/Inf value(s) in {describe(arr)}.")
    return logits, targets, embeddings, weight, bias, soft


def check_class_ids(targets: np.ndarray, num_classes: int) -> None:
    check_class_id_range(int(targets.min()), int(targets.max()), num_classes)


def check_class_id_range(lo: int, hi: int, num_classes: int) -> None:
    """Raise unless the smallest and largest class ids lie in [0, num_classes)."""
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"Expected `targets` class ids in [0, {num_classes - 1}] (C={num_classes} from logits); "
            f"got values in [{lo}, {hi}]."
        )


def check_soft_targets(targets: np.ndarray, atol: float = 1e-4) -> None:
    if not np.all(np.isfinite(targets)):
        raise ValueError(f"Expected finite soft `targets`; got NaN/Inf in {describe(targets)}.")
    if targets.min() < -atol:
        raise ValueError(
            f"Expected soft `targets` to be probabilities (>= 0); got minimum {targets.min():.6g}."
        )
    sums = targets.sum(axis=1)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > atol:
        raise ValueError(
            f"Expected soft `targets` rows to sum to 1 (probabilities, e.g. label smoothing or mixup); "
            f"got a row summing to {sums[np.argmax(np.abs(sums - 1.0))]:.6g}."
        )


def check_finite(name: str, value, *, low: float = -np.inf, high: float = np.inf) -> float:
    """``value`` as a float, or a ValueError naming ``name``: a real number (not bool, not a string), finite
    (NaN compares false with every bound, so a NaN tolerance or guard would silently switch a check off), and
    within ``[low, high]``."""
    ok = (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and np.isfinite(value)
        and low <= value <= high
    )
    if not ok:
        bounds = "" if (low, high) == (-np.inf, np.inf) else f" in [{low:g}, {high:g}]"
        raise ValueError(f"Expected `{name}` to be a finite number{bounds}; got {value!r}.")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value) and value > 0):
        raise ValueError(f"Expected `{name}` to be a positive finite number; got {value!r}.")
    return float(value)


def check_finite_number(name: str, value: float) -> float:
    """A real finite number (NaN or inf would silently switch a check off)."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value)
    ):
        raise ValueError(f"Expected `{name}` to be a finite number; got {value!r}.")
    return float(value)


def check_choice(name: str, value: Any, allowed) -> Any:
    if value not in allowed:
        raise ValueError(f"Expected `{name}` to be one of {sorted(allowed)}; got {value!r}.")
    return value


def _float_array(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"Expected `{name}` to be a real-valued array; got {describe(arr)}.")
    return arr.astype(np.float64, copy=False)
