"""Validation of a :class:`gwa.torch.GWATracker` state dict before anything is loaded from it."""

from __future__ import annotations

import torch
from gwa.torch._checks import invalid_state as _fail
from gwa.torch._checks import state_count as _count
from gwa.torch._epoch import EpochCounts
from gwa.torch._kernel import undefined_from_norm
from gwa.torch._storage import STATE_FORMAT


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
    """Check format, settings, counts and shapes; return the epoch state to load (format 2) or None.

    A chunk's ``undefined`` written by gwa up to 9db5a86 may be the captured norm (float) rather than a mask: it
    is returned as the mask it stands for, so that the storage holds masks only.
    """
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
    EpochCounts.check_state(epoch_state)
    sightings = epoch_state["sightings"]
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
    masks = [
        (*chunk[:3], chunk[3] if chunk[3].dtype == torch.bool else undefined_from_norm(chunk[3]), *chunk[4:])
        for chunk in chunks
    ]
    return {**epoch_state, "data": {**data, "chunks": masks}}
