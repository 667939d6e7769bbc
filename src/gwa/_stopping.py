"""Stop rules: post-hoc checkpoint choice over a finished curve, and an online early stopper."""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from gwa._validation import check_choice

log = logging.getLogger(__name__)

RULES = ("paper", "finetune", "max", "min")


def select_epoch(values: Sequence[float], rule: str = "paper", warmup_frac: float = 0.1) -> int:
    """Pick a checkpoint from a per-epoch curve; returns a 0-based index into ``values``.

    Rules:
        - ``"paper"``: skip the first ``floor(warmup_frac * len(values))`` epochs (the paper's first 10% of
          training), then the argmax.
        - ``"finetune"``: after the warm-up, find the first local minimum (the first epoch whose successor is
          not lower), then the argmax from there on (a pretrained model's alignment first drops, then rises).
        - ``"max"`` / ``"min"``: plain argmax / argmin after the warm-up.

    NaN entries (e.g. guarded GWA values, see :attr:`gwa.EpochSummary.gwa_or_nan`) are never chosen. Ties go
    to the earliest epoch.

    Raises:
        ValueError: for an unknown rule, a warm-up outside [0, 1), or no finite value after the warm-up.
    """
    check_choice("rule", rule, RULES)
    if not (0.0 <= float(warmup_frac) < 1.0):
        raise ValueError(f"Expected `warmup_frac` in [0, 1); got {warmup_frac!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"Expected `values` to be a non-empty 1-D sequence; got shape={v.shape}.")
    # The epsilon keeps decimal fractions exact: 0.7 * 90 is 62.999... in binary, but means 63 epochs.
    start = int(math.floor(warmup_frac * v.size + 1e-9))
    if rule == "finetune":
        start = _first_local_minimum(v, start)
    window = v[start:]
    finite = np.isfinite(window)
    if not finite.any():
        raise ValueError(
            f"Expected at least one finite value in `values` after the warm-up (from index {start}); "
            f"got {window.tolist()}."
        )
    masked = np.where(finite, window, np.inf if rule == "min" else -np.inf)
    pick = np.argmin(masked) if rule == "min" else np.argmax(masked)
    return start + int(pick)


def _first_local_minimum(v: np.ndarray, start: int) -> int:
    """Index of the first finite value at or after ``start`` whose next finite value is not lower."""
    idx = [i for i in range(start, v.size) if np.isfinite(v[i])]
    for a, b in zip(idx, idx[1:]):
        if v[b] >= v[a]:
            return a
    return idx[-1] if idx else start


class EarlyStopper:
    """Online stop decision on a per-epoch value, with restore-best bookkeeping.

    Call :meth:`step` once per epoch; it returns True when training should stop. The best epoch and value
    are tracked whether or not the stopper fires, so the caller can restore the best checkpoint either way.

    Args:
        mode: ``"max"`` (GWA, alignment) or ``"min"``.
        patience: epochs without improvement before stopping (counted after the warm-up).
        min_delta: an improvement must exceed this.
        warmup: epochs at the start that are observed but can neither be best nor count toward patience
            (the paper skips the first 10% of training).
        stop_on_non_finite: stop when the value is NaN/Inf; otherwise such an epoch only counts as no
            improvement (a guarded GWA is passed as NaN).

    Example:
        >>> s = EarlyStopper(patience=2)
        >>> [s.step(v) for v in [0.1, 0.3, 0.2, 0.25]]
        [False, False, False, True]
        >>> s.best_epoch, s.best_value
        (1, 0.3)
    """

    def __init__(self, mode: str = "max", *, patience: int = 5, min_delta: float = 0.0, warmup: int = 0,
                 stop_on_non_finite: bool = False):
        check_choice("mode", mode, ("max", "min"))
        if not (isinstance(patience, (int, np.integer)) and patience >= 1):
            raise ValueError(f"Expected `patience` to be an integer >= 1; got {patience!r}.")
        if not (isinstance(warmup, (int, np.integer)) and warmup >= 0):
            raise ValueError(f"Expected `warmup` to be an integer >= 0; got {warmup!r}.")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"Expected `min_delta` to be a finite number >= 0; got {min_delta!r}.")
        self.mode, self.patience, self.min_delta, self.warmup = mode, int(patience), float(min_delta), int(warmup)
        self.stop_on_non_finite = bool(stop_on_non_finite)
        self.reset()

    def reset(self) -> None:
        self.epoch = -1          # index of the last epoch seen (0-based)
        self.best_epoch: int | None = None
        self.best_value = math.nan
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.reason = ""

    def _improves(self, value: float) -> bool:
        if self.best_epoch is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def step(self, value: float, epoch: int | None = None) -> bool:
        """Record the value of one epoch; return True if training should stop now."""
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        value = float(value)
        if self.stopped_epoch is not None:
            return True
        if self.epoch < self.warmup:
            self.reason = f"epoch {self.epoch}: warm-up ({self.warmup} epochs)"
            return False
        if not math.isfinite(value):
            if self.stop_on_non_finite:
                return self._stop(f"value {value} is not finite")
            self.wait += 1
        elif self._improves(value):
            self.best_epoch, self.best_value, self.wait = self.epoch, value, 0
            self.reason = f"epoch {self.epoch}: new best {value:.6g}"
            return False
        else:
            self.wait += 1
        if self.wait >= self.patience:
            return self._stop(f"no improvement over {self.best_value:.6g} (epoch {self.best_epoch}) "
                              f"in the last {self.wait} epochs")
        self.reason = f"epoch {self.epoch}: {self.wait}/{self.patience} epochs without improvement"
        return False

    def _stop(self, why: str) -> bool:
        self.stopped_epoch = self.epoch
        self.reason = f"stopped at epoch {self.epoch}: {why}"
        log.info(self.reason)
        return True

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None

    def state_dict(self) -> dict:
        return {"mode": self.mode, "patience": self.patience, "min_delta": self.min_delta, "warmup": self.warmup,
                "stop_on_non_finite": self.stop_on_non_finite, "epoch": self.epoch, "best_epoch": self.best_epoch,
                "best_value": None if math.isnan(self.best_value) else self.best_value, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "reason": self.reason}

    def load_state_dict(self, state: dict) -> None:
        for key in ("mode", "patience", "min_delta", "warmup"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"Cannot load an EarlyStopper state with {key}={state[key]!r} into one with "
                                 f"{key}={getattr(self, key)!r}.")
        self.epoch = int(state["epoch"])
        self.best_epoch = state["best_epoch"]
        self.best_value = math.nan if state["best_value"] is None else float(state["best_value"])
        self.wait = int(state["wait"])
        self.stopped_epoch = state.get("stopped_epoch")
        self.reason = state.get("reason", "")
        self.stop_on_non_finite = bool(state.get("stop_on_non_finite", self.stop_on_non_finite))
