"""Validation of a :class:`gwa.torch.GWATracker` state dict before anything is loaded from it."""

from __future__ import annotations

import torch
from gwa.torch._storage import STATE_FORMAT

_STORAGES = ("indexed", "sparse", "moments")


def _fail(what: str, got) -> None:
    raise ValueError(f"Invalid GWATracker state: expected {what}; got {got!r}.")


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(f"`{name}` to be a non-negative int", value)
    return value


def _vector(name: str, t, *, floating: bool | None = None, length: int | None = None) -> int:
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        _fail(
            f"`{name}` to be a 1-D tensor",
            t if not isinstance(t, torch.Tensor) else f"shape {tuple(t.shape)}",
        )
    if floating is True and not t.is_floating_point():
        _fail(f"`{name}` to be floating point", t.dtype)
    if floating is False and (t.is_floating_point() or t.is_complex()):
        _fail(f"`{name}` to hold integers", t.dtype)
    if length is not None and t.shape[0] != length:
        _fail(f"`{name}` of length {length}", f"length {t.shape[0]}")
    return t.shape[0]


def validate_state(state, tracker) -> dict | None:
    """Check format, settings, counts and shapes; return the epoch state to load (format 2) or None."""
    if not isinstance(state, dict):
        _fail("a dict from GWATracker.state_dict()", type(state).__name__)
    fmt = state.get("format")
    if fmt not in (1, STATE_FORMAT):
        _fail(f"`format` 1 or {STATE_FORMAT} (this gwa writes {STATE_FORMAT})", fmt)
    for key in ("epoch", "history", "num_samples", "bias", "signals", "epoch_state"):
        if key not in state:
            _fail(f"the key {key!r}", sorted(state))
    for key in ("num_samples", "bias", "signals"):
        mine = list(tracker.signals) if key == "signals" else getattr(tracker, key)
        if state[key] != mine:
            raise ValueError(f"Expected a state with {key}={mine!r} like this tracker; got {state[key]!r}.")
    epoch = _count("epoch", state["epoch"])
    history = state["history"]
    if (
        not isinstance(history, list)
        or len(history) != epoch
        or not all(isinstance(h, dict) for h in history)
    ):
        _fail(
            f"`history` to be a list of {epoch} summary dicts (one per completed epoch)",
            f"{type(history).__name__} of length {len(history) if isinstance(history, list) else '?'}",
        )
    epoch_state = state["epoch_state"]
    if epoch_state is None:
        return None
    if fmt == 1:
        raise ValueError(
            "Invalid GWATracker state: format 1 (gwa before the fused tracker) holds a partial "
            "epoch, which this version cannot resume; resume from a checkpoint taken at an epoch "
            "boundary, or restart the epoch."
        )
    expected = tracker.storage.name
    if epoch_state.get("storage") != expected:
        _fail(
            f"a partial epoch of the {expected!r} storage (this tracker's settings)",
            epoch_state.get("storage"),
        )
    sightings = _count("epoch_state.sightings", epoch_state.get("sightings"))
    _count("epoch_state.n_unpaired", epoch_state.get("n_unpaired"))
    if epoch_state.get("positions") not in (None, True, False):
        _fail("`epoch_state.positions` None/True/False", epoch_state.get("positions"))
    if epoch_state.get("dtype") not in (None, "float32", "float64"):
        _fail("`epoch_state.dtype` None, 'float32' or 'float64'", epoch_state.get("dtype"))
    violations = epoch_state.get("soft_violations")
    if violations is not None and (
        not isinstance(violations, list)
        or len(violations) != 3
        or any(_count("soft_violations", v) is None for v in violations)
    ):
        _fail("`epoch_state.soft_violations` None or 3 counts", violations)
    data = epoch_state.get("data")
    if not isinstance(data, dict):
        _fail("`epoch_state.data` to be a dict", type(data).__name__)
    if expected == "moments":
        sums = data.get("sums")
        if sums is not None:
            _vector("sums.sums", sums.get("sums"), floating=True, length=4)
            _vector("sums.counts", sums.get("counts"), floating=False, length=3)
            if (
                bool((sums["counts"] < 0).any())
                or int(sums["counts"][0]) + int(sums["counts"][2]) > sightings
            ):
                _fail(
                    f"`sums.counts` non-negative, valid + non-finite <= sightings ({sightings})",
                    sums["counts"].tolist(),
                )
            shift = sums.get("shift")
            if shift is not None and (not isinstance(shift, torch.Tensor) or shift.numel() != 1):
                _fail("`sums.shift` None or a scalar tensor", shift)
        return epoch_state
    chunks = data.get("chunks")
    if not isinstance(chunks, list):
        _fail("`data.chunks` to be a list", type(chunks).__name__)
    total = 0
    for k, chunk in enumerate(chunks):
        if not isinstance(chunk, (tuple, list)) or len(chunk) not in (5, 7):
            _fail(
                f"chunk {k} to be (ids, offset, scores, undefined, signals[, predictions, labels])",
                type(chunk).__name__ if not isinstance(chunk, (tuple, list)) else f"{len(chunk)} items",
            )
        ids, offset, scores, undefined, signals = chunk[:5]
        n = _vector(f"chunks[{k}].scores", scores, floating=True)
        _vector(f"chunks[{k}].undefined", undefined, length=n)
        for name, classes in zip(("predictions", "labels"), chunk[5:], strict=False):
            _vector(f"chunks[{k}].{name}", classes, floating=False, length=n)
        if ids is not None:
            _vector(f"chunks[{k}].ids", ids, floating=False, length=n)
            if (
                tracker.num_samples is not None
                and n
                and (int(ids.min()) < 0 or int(ids.max()) >= tracker.num_samples)
            ):
                _fail(f"chunks[{k}].ids in [0, {tracker.num_samples})", (int(ids.min()), int(ids.max())))
        if _count(f"chunks[{k}].offset", offset) != total:
            _fail(f"chunks[{k}].offset == {total} (the sightings before it)", offset)
        if not isinstance(signals, dict) or sorted(signals) != sorted(tracker.signals):
            _fail(f"chunks[{k}].signals with keys {sorted(tracker.signals)}", signals)
        for name, v in signals.items():
            _vector(f"chunks[{k}].signals[{name!r}]", v, floating=True, length=n)
        total += n
    if total != sightings:
        _fail(f"`epoch_state.sightings` == {total} (the chunks' rows)", sightings)
    return epoch_state
