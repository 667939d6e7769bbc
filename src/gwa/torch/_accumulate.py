"""Device-resident accumulation of one epoch: shifted power sums, counters and the per-sample store.

Nothing here reads a tensor value on the host during the epoch: counts, sums and masks stay tensors, so the
training loop never waits for the device. The host sees the numbers once, at the end of the epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from gwa._moments import EMPTY, MomentState

#: Slots of :attr:`EpochSums.counts`. Duplicates are the sightings left over: total - valid - non-finite.
N_VALID, N_UNDEFINED, N_NON_FINITE = 0, 1, 2
# Occurrence index of non-finite sightings, larger than any real one; unclaimed ids hold _UNCLAIMED, one less,
# so that a non-finite sighting never equals its id's owner and never claims it.
_NEVER = torch.iinfo(torch.int64).max
_UNCLAIMED = _NEVER - 1


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

    def add(self, scores: torch.Tensor, undefined: torch.Tensor, valid: torch.Tensor,
            nonfinite: torch.Tensor) -> None:
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
        return power_sums_to_state(n, float(self.shift), *(float(v) for v in self.sums.double().cpu()))

    def state_dict(self) -> dict:
        return {"sums": self.sums.detach().cpu().clone(), "counts": self.counts.detach().cpu().clone(),
                "shift": None if self.shift is None else self.shift.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        device = self.sums.device
        self.sums = state["sums"].to(device, self.dtype).clone()
        self.counts = state["counts"].to(device).clone()
        self.shift = None if state["shift"] is None else state["shift"].to(device, self.dtype).clone()


class SampleStore:
    """Per-sample values in ``(num_samples + 1,)`` device tensors, indexed by sample id.

    The first finite sighting of an id in the epoch claims it: ``owner[id]`` keeps the smallest occurrence
    index, so repeats within a batch and across batches are recognised by one ``scatter_reduce``. Rows that
    must not be written go to the spare last slot, which avoids data-dependent (host-syncing) masking.
    """

    def __init__(self, num_samples: int, names, device: torch.device, dtype: torch.dtype):
        self.num_samples = num_samples
        self.owner = torch.full((num_samples,), _UNCLAIMED, dtype=torch.int64, device=device)
        self.occurrences = 0  # sightings so far this epoch (host int: batch sizes are known on the host)
        self.values = {"score": torch.full((num_samples + 1,), float("nan"), dtype=dtype, device=device),
                       "undefined": torch.zeros(num_samples + 1, dtype=torch.bool, device=device)}
        for name in names:
            self.values[name] = torch.full((num_samples + 1,), float("nan"), dtype=torch.float32, device=device)

    def claim(self, ids: torch.Tensor, nonfinite: torch.Tensor) -> torch.Tensor:
        """``(B,)`` True for the sightings that are the first finite one of their id this epoch."""
        batch = ids.shape[0]
        position = torch.arange(self.occurrences, self.occurrences + batch, device=ids.device)
        position.masked_fill_(nonfinite, _NEVER)
        self.owner.scatter_reduce_(0, ids, position, reduce="amin")
        self.occurrences += batch
        return self.owner[ids] == position

    def write(self, ids: torch.Tensor, new: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        slot = ids.masked_fill(~new, self.num_samples)
        for name, value in values.items():
            store = self.values[name]
            store.index_put_((slot,), value if value.dtype == store.dtype else value.to(store.dtype))

    @property
    def seen(self) -> torch.Tensor:
        return self.owner != _UNCLAIMED

    def state_dict(self) -> dict:
        return {"owner": self.owner.cpu().clone(), "occurrences": self.occurrences,
                "values": {k: v.cpu().clone() for k, v in self.values.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = self.owner.device
        self.owner = state["owner"].to(device).clone()
        self.occurrences = int(state["occurrences"])
        self.values = {k: v.to(device).clone() for k, v in state["values"].items()}


def power_sums_to_state(n: float, shift: float, s1: float, s2: float, s3: float, s4: float) -> MomentState:
    """Central moments ``(n, mean, M2, M3, M4)`` from power sums about ``shift``."""
    mu = s1 / n  # mean deviation from the shift
    m2 = s2 - n * mu * mu
    m3 = s3 - 3.0 * mu * s2 + 2.0 * n * mu ** 3
    m4 = s4 - 4.0 * mu * s3 + 6.0 * mu * mu * s2 - 3.0 * n * mu ** 4
    return MomentState(n, shift + mu, max(m2, 0.0), m3, max(m4, 0.0))


def first_occurrence(ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each id, in order."""
    _, first = np.unique(ids, return_index=True)
    mask = np.zeros(len(ids), dtype=bool)
    mask[first] = True
    return mask
