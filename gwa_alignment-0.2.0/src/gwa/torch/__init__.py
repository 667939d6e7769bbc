"""PyTorch adapter: the alignment kernel on tensors, head discovery and the per-epoch tracker.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from gwa.torch import GWATracker
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> tracker = GWATracker(model, num_samples=6)
    >>> x, y, idx = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)
    >>> logits = model(x); F.cross_entropy(logits, y).backward()
    >>> tracker.update(logits, y, sample_ids=idx)   # before or after optimizer.step(); scored in batches of 32
    >>> result = tracker.end_epoch()
    >>> result.epoch, result.summary.n, result.scores.shape
    (1, 6, (6,))
"""

from gwa.torch._head import find_head
from gwa.torch._kernel import alignment, alignment_with_mask
from gwa.torch._signals import SIGNAL_NAMES
from gwa.torch._tracker import DEFAULT_DEFER, EpochResult, GWATracker

__all__ = [
    "DEFAULT_DEFER",
    "SIGNAL_NAMES",
    "EpochResult",
    "GWATracker",
    "alignment",
    "alignment_with_mask",
    "find_head",
]
