"""What a trainer integration records besides alignment, for complete run directories: the training labels by
sample id (from the targets the trainer sees) and the inputs of some samples (the report's thumbnails).

Both stay on the device during the epoch (no host synchronisation per batch) and are read once per epoch.
"""

from __future__ import annotations

import math

import numpy as np
import torch.distributed as dist

import torch

#: Device memory the previews may take; all samples are kept when they fit, else the most negatively aligned.
PREVIEW_BUDGET_BYTES = 16 * 2**20
#: At most this many previews when not all samples fit (the report shows the worst 20 by default).
PREVIEW_COUNT = 256
#: Fewer previews than this would not cover the report's table: store none.
MIN_PREVIEWS = 8


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(fallback: torch.device | None) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback if fallback is not None and fallback.type == "cpu" else torch.device("cpu")


def _ids_tensor(sample_ids, device: torch.device) -> torch.Tensor:
    ids = sample_ids if isinstance(sample_ids, torch.Tensor) else torch.as_tensor(sample_ids)
    return ids.to(device, torch.int64, non_blocking=True)


#: Said once when soft targets were skipped and no ``labels=`` was given: the run directory gets no labels from them.
SOFT_TARGETS_WITHOUT_LABELS = (
    "gwa: the batches carry soft targets (mixup/CutMix or smoothing in the collate function), whose argmax is "
    "not the dataset's label (under mixup, the partner's label for lam < 0.5), so no labels were stored for "
    "them; pass labels= (the training labels by sample id, e.g. train_set.targets) for the report and gwa flag."
)


def is_soft(targets) -> bool:
    """Targets given as ``(B, C)`` rows (mixup/CutMix, label smoothing): not the dataset's labels, and their batch's
    inputs may be mixed."""
    return isinstance(targets, torch.Tensor) and targets.dim() == 2


class LabelCollector:
    """The training label of every sample id, from the class ids given with it.

    Soft targets are skipped, never reduced to their argmax: under mixup or CutMix with ``lam < 0.5`` the argmax of
    a mixed row is the partner's label (a third of the samples in a ResNet run); :attr:`saw_soft` says that some
    were skipped, so the caller can ask for ``labels=``. Unseen ids keep ``-1``. Under ``torch.distributed`` :meth:`labels` merges what every rank saw (a collective:
    call it on every rank).
    """

    def __init__(self, num_samples: int):
        self.num_samples = int(num_samples)
        self._labels: torch.Tensor | None = None
        self.saw_soft = False

    def observe(self, targets: torch.Tensor, sample_ids) -> None:
        if sample_ids is None or not isinstance(targets, torch.Tensor):
            return
        if is_soft(targets):
            self.saw_soft = True
            return
        with torch.no_grad():
            labels = targets.detach()
            if self._labels is None:
                self._labels = torch.full((self.num_samples,), -1, dtype=torch.int64, device=labels.device)
            ids = _ids_tensor(sample_ids, self._labels.device)
            self._labels[ids] = labels.to(self._labels.device, torch.int64)

    def labels(self) -> np.ndarray | None:
        """``(N,)`` int64 labels by sample id (``-1`` where unseen), or None when no rank saw a labelled id."""
        if _distributed():
            device = _comm_device(None if self._labels is None else self._labels.device)
            mine = (
                torch.full((self.num_samples,), -1, dtype=torch.int64, device=device)
                if self._labels is None
                else self._labels.to(device)
            )
            dist.all_reduce(mine, op=dist.ReduceOp.MAX)
            out: np.ndarray | None = mine.cpu().numpy()
        else:
            out = None if self._labels is None else self._labels.cpu().numpy()
        return None if out is None or (out < 0).all() else out


def _preview_shape(shape: tuple) -> tuple | None:
    """The per-sample shape of inputs the report can draw: ``(L,)``, ``(H, W)``, ``(C, H, W)`` with C in 1, 3,
    or ``(H, W, 3)``; None for anything else (token ids, video, ...)."""
    if len(shape) == 1 or len(shape) == 2:
        return shape
    if len(shape) == 3 and (shape[0] in (1, 3) or shape[-1] == 3):
        return shape
    return None


class PreviewCollector:
    """Inputs of some training samples by id, for the report's thumbnails.

    When all ``N`` inputs fit in :data:`PREVIEW_BUDGET_BYTES` they are all kept; otherwise at most
    :data:`PREVIEW_COUNT` (fewer for large inputs): in the first epoch the ids ``0..K-1``, then in each epoch the
    K most negatively aligned samples of the epoch before (:meth:`want`), which are those the report shows.
    Float inputs only (token ids have no picture); other inputs disable the collector silently.
    """

    def __init__(self, num_samples: int, *, budget_bytes: int | None = None, count: int = PREVIEW_COUNT):
        budget_bytes = PREVIEW_BUDGET_BYTES if budget_bytes is None else budget_bytes
        self.num_samples, self.budget, self.count = int(num_samples), int(budget_bytes), int(count)
        self.enabled = True
        self.shape: tuple | None = None
        self._buffer: torch.Tensor | None = None  # (K + 1, *shape); the last row takes writes of unwanted ids
        self._slot: torch.Tensor | None = None  # (N,) slot of each id, K for "not wanted"
        self._filled: torch.Tensor | None = None
        self._kept: dict[int, np.ndarray] = {}
        self._all = False

    def observe(self, inputs, sample_ids) -> None:
        if not self.enabled or sample_ids is None:
            return
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
            self.enabled = False
            return
        if self._buffer is None and not self._allocate(tuple(inputs.shape[1:]), inputs.device):
            return
        if tuple(inputs.shape[1:]) != self.shape:
            self.enabled = False  # variable-size inputs: no previews
            return
        assert self._slot is not None and self._buffer is not None and self._filled is not None  # _allocate()
        with torch.no_grad():
            slots = self._slot[_ids_tensor(sample_ids, self._slot.device)]
            self._buffer[slots] = inputs.detach().to(self._buffer.device, torch.float32)
            self._filled[slots] = True

    def _allocate(self, shape: tuple, device: torch.device) -> bool:
        self.shape = _preview_shape(shape)
        if self.shape is None:
            self.enabled = False
            return False
        per_sample = 4 * math.prod(self.shape)
        self._all = self.num_samples * per_sample <= self.budget
        k = self.num_samples if self._all else min(self.count, self.budget // per_sample, self.num_samples)
        if k < min(MIN_PREVIEWS, self.num_samples):
            self.enabled = False
            return False
        self._buffer = torch.zeros((k + 1, *self.shape), dtype=torch.float32, device=device)
        self._filled = torch.zeros(k + 1, dtype=torch.bool, device=device)
        self._slot = torch.full((self.num_samples,), k, dtype=torch.int64, device=device)
        self._slot[:k] = torch.arange(k, device=device)
        return True

    def want(self, scores: np.ndarray | None) -> None:
        """End of an epoch: keep what was captured; next epoch, capture the most negatively aligned samples."""
        if self._buffer is None:
            return
        self._harvest()
        if self._all or scores is None:
            return
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(np.where(np.isfinite(scores), scores, np.inf), kind="stable")
        k = self._buffer.shape[0] - 1
        wanted = order[:k][np.isfinite(scores[order[:k]])]
        self._kept = {i: v for i, v in self._kept.items() if i in set(wanted.tolist())}
        slot = torch.full((self.num_samples,), k, dtype=torch.int64)
        slot[torch.from_numpy(wanted)] = torch.arange(wanted.size)
        self._slot = slot.to(self._buffer.device)
        assert self._filled is not None  # allocated with the buffer
        self._filled.zero_()

    def _harvest(self) -> None:
        # want() checked the buffer; _allocate() made all three together
        assert self._buffer is not None and self._slot is not None and self._filled is not None
        filled = self._filled[:-1].cpu().numpy()
        if not filled.any():
            return
        buffer = self._buffer[:-1].cpu().numpy()
        slot = self._slot.cpu().numpy()
        ids = np.flatnonzero(slot < buffer.shape[0])
        for i in ids[filled[slot[ids]]]:
            self._kept[int(i)] = buffer[slot[i]].copy()

    def previews(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ids (K,), inputs (K, *shape))`` sorted by id, or None when nothing was kept."""
        if self._buffer is not None:
            self._harvest()
        if not self._kept:
            return None
        ids = np.array(sorted(self._kept), dtype=np.int64)
        return ids, np.stack([self._kept[int(i)] for i in ids])
