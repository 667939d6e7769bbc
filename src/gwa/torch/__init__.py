"""PyTorch adapter: the alignment kernel on tensors, head discovery and the per-epoch tracker.

Example:
    >>> from gwa.torch import GWATracker  # doctest: +SKIP
    >>> tracker = GWATracker(model, num_samples=len(dataset))
    >>> logits = model(x); loss = criterion(logits, y); loss.backward()
    >>> tracker.update(logits, y, sample_ids=idx)   # before or after optimizer.step()
    >>> result = tracker.end_epoch()
"""

from gwa.torch._head import find_head
from gwa.torch._kernel import alignment, alignment_with_mask
from gwa.torch._signals import SIGNAL_NAMES
from gwa.torch._tracker import EpochResult, GWATracker

__all__ = [
    "SIGNAL_NAMES",
    "EpochResult",
    "GWATracker",
    "alignment",
    "alignment_with_mask",
    "find_head",
]
