"""Device-resident accumulation of one epoch: shifted power sums and the per-sample store.

Nothing here reads a tensor value on the host during the epoch: counts, sums and masks stay tensors, so the
training loop never waits for the device. The host sees the numbers once, at the end of the epoch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gwa._moments import EMPTY, MomentState

# Slots of the counter tensor.
N_UNDEFINED, N_NON_FINITE, N_DUPLICATES = 0, 1, 2


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (mps does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class PowerSums:
    """``n`` and ``sum (x - K)^k`` for ``k = 1..4`` about a shift ``K`` (the first batch's mean, on device).

    With ``K`` near the mean, the central moments follow from the power sums without catastrophic
    cancellation; scores are bounded in ``[-1, 1]``, so float64 sums lose nothing measurable.
    """

    def __init__(self, device: torch.device):
        self.dtype = accumulation_dtype(device)
        self.sums = torch.zeros(5, dtype=self.dtype, device=device)  # n, S1, S2, S3, S4
        self.shift: torch.Tensor | None = None

    def add(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the ``values`` where ``mask`` is True (both ``(N,)``, on the device)."""
        x = values.to(self.dtype)
        weight = mask.to(self.dtype)
        if self.shift is None:
            count = weight.sum()
            self.shift = torch.where(mask, x, 0.0).sum() / count.clamp_min(1.0)
        dev = torch.where(mask, x - self.shift, 0.0)
        dev2 = dev * dev
        powers = torch.stack((weight, dev, dev2, dev2 * dev, dev2 * dev2))
        self.sums += powers.sum(dim=1)

    def to_state(self) -> MomentState:
        """The exact central-moment state (one host sync)."""
        n, s1, s2, s3, s4 = (float(v) for v in self.sums.double().cpu())
        if n == 0:
            return EMPTY
        return power_sums_to_state(n, float(self.shift), s1, s2, s3, s4)

    def state_dict(self) -> dict:
        return {"sums": self.sums.detach().cpu().clone(),
                "shift": None if self.shift is None else self.shift.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.sums = state["sums"].to(self.sums.device, self.dtype).clone()
        self.shift = None if state["shift"] is None else state["shift"].to(self.sums.device, self.dtype).clone()


def power_sums_to_state(n: float, shift: float, s1: float, s2: float, s3: float, s4: float) -> MomentState:
    """Central moments ``(n, mean, M2, M3, M4)`` from power sums about ``shift``."""
    mu = s1 / n  # mean deviation from the shift
    m2 = s2 - n * mu * mu
    m3 = s3 - 3.0 * mu * s2 + 2.0 * n * mu ** 3
    m4 = s4 - 4.0 * mu * s3 + 6.0 * mu * mu * s2 - 3.0 * n * mu ** 4
    return MomentState(n, shift + mu, max(m2, 0.0), m3, max(m4, 0.0))


def shifted_powers(values: np.ndarray, shift: float) -> np.ndarray:
    """``[count, sum dev, sum dev^2, sum dev^3, sum dev^4]`` of host values about ``shift`` (float64)."""
    dev = np.asarray(values, dtype=np.float64) - shift
    dev2 = dev * dev
    return np.array([dev.size, dev.sum(), dev2.sum(), (dev2 * dev).sum(), (dev2 * dev2).sum()])


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each id, in order."""
    _, first = np.unique(ids, return_index=True)
    mask = np.zeros(len(ids), dtype=bool)
    mask[first] = True
    return mask


def is_new_in_batch(ids: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    """``(N,)`` True where a finite sample is the first finite occurrence of its id in the batch."""
    # Finite rows sort before non-finite ones of the same id; the stable sort keeps batch order among them.
    key = ids.long() * 2 + (~finite).long()
    sorted_key, order = torch.sort(key, stable=True)
    sorted_finite = finite[order]
    repeat = torch.zeros_like(sorted_finite)
    repeat[1:] = ((sorted_key[1:] // 2) == (sorted_key[:-1] // 2)) & sorted_finite[:-1]
    return finite & ~torch.empty_like(repeat).scatter_(0, order, repeat)


def nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x
