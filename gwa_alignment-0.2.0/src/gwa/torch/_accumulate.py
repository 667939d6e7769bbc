"""Device-resident accumulation of one epoch's moments: shifted power sums and counters.

Nothing here reads a tensor value on the host during the epoch: counts, sums and masks stay tensors, so the
training loop never waits for the device. The host sees the numbers once, at the end of the epoch.
"""

from __future__ import annotations

import torch
from gwa._moments import EMPTY, MomentState

#: Slots of :attr:`EpochSums.counts`. Duplicates are the sightings left over: total - valid - non-finite.
N_VALID, N_UNDEFINED, N_NON_FINITE = 0, 1, 2


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (mps does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


class EpochSums:
    """Counts and ``sum (x - K)^k`` for ``k = 1..4`` about a shift ``K`` (the first batch's mean, on device).

    With ``K`` near the mean, the central moments follow from the power sums without catastrophic
    cancellation; scores are bounded in ``[-1, 1]``, so float64 sums lose nothing measurable.
    """

    def __init__(self, device: torch.device):
        self.dtype = accumulation_dtype(device)
        self.sums = torch.zeros(4, dtype=self.dtype, device=device)
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)  # valid, undefined, non-finite
        self.shift: torch.Tensor | None = None
        self._exponents = torch.arange(1, 5, dtype=self.dtype, device=device)

    def add(
        self, scores: torch.Tensor, undefined: torch.Tensor, valid: torch.Tensor, nonfinite: torch.Tensor
    ) -> None:
        """Add the ``scores`` where ``valid``; count valid, undefined valid and non-finite sightings."""
        x = scores.to(self.dtype)
        if self.shift is None:
            self.shift = torch.where(valid, x, 0.0).sum() / valid.sum().clamp_min(1)
        dev = torch.where(valid, x, self.shift).sub_(self.shift)
        self.sums += torch.pow(dev[:, None], self._exponents).sum(dim=0)
        self.counts += torch.stack((valid, undefined & valid, nonfinite)).sum(dim=1)

    def to_state(self) -> MomentState:
        """The exact central-moment state (one host sync)."""
        n = float(self.counts[N_VALID])
        if n == 0:
            return EMPTY
        assert self.shift is not None  # set by the first add(), before any count
        return power_sums_to_state(n, float(self.shift), *(float(v) for v in self.sums.double().cpu()))

    def state_dict(self) -> dict:
        return {
            "sums": self.sums.detach().cpu().clone(),
            "counts": self.counts.detach().cpu().clone(),
            "shift": None if self.shift is None else self.shift.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.sums.device
        self.sums = state["sums"].to(device, self.dtype).clone()
        self.counts = state["counts"].to(device).clone()
        self.shift = None if state["shift"] is None else state["shift"].to(device, self.dtype).clone()


def power_sums_to_state(n: float, shift: float, s1: float, s2: float, s3: float, s4: float) -> MomentState:
    """Central moments ``(n, mean, M2, M3, M4)`` from power sums about ``shift``."""
    mu = s1 / n  # mean deviation from the shift
    m2 = s2 - n * mu * mu
    m3 = s3 - 3.0 * mu * s2 + 2.0 * n * mu**3
    m4 = s4 - 4.0 * mu * s3 + 6.0 * mu * mu * s2 - 3.0 * n * mu**4
    return MomentState(n, shift + mu, max(m2, 0.0), m3, max(m4, 0.0))
