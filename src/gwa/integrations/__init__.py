"""Drop-in integrations of :class:`gwa.torch.GWATracker` with the trainers people use.

- :mod:`gwa.integrations.lightning`: ``GWACallback`` for Lightning's ``Trainer``.
- :mod:`gwa.integrations.huggingface`: ``GWATrainerCallback`` for Hugging Face's ``Trainer``.
- :class:`RunRecorder`: the run directory and the stop decision of a plain PyTorch loop (``torchrun`` too).
- :class:`WithIndex`: a dataset wrapper that appends each item's index (the sample id scores are stored by).

Each imports its framework only when imported itself (``RunRecorder`` imports torch on first use). All share
:class:`EpochMonitor` (stop rule, best epoch, best weights, run directory), so every trainer logs the same keys
and writes the same run directory.
"""

from gwa.integrations._dataset import WithIndex
from gwa.integrations._monitor import MONITORS, EpochMonitor

__all__ = ["MONITORS", "RECOMMENDED_SIGNALS", "EpochMonitor", "RunRecorder", "WithIndex"]


def __getattr__(name):
    if name in ("RunRecorder", "RECOMMENDED_SIGNALS"):
        from gwa.integrations import _recorder

        return getattr(_recorder, name)
    raise AttributeError(f"module 'gwa.integrations' has no attribute {name!r}")
