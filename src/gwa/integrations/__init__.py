"""Drop-in integrations of :class:`gwa.torch.GWATracker` with the trainers people use.

- :mod:`gwa.integrations.lightning`: ``GWACallback`` for Lightning's ``Trainer``.
- :mod:`gwa.integrations.huggingface`: ``GWATrainerCallback`` for Hugging Face's ``Trainer``.
- :class:`RunRecorder`: the run directory and the stop decision of a plain PyTorch loop (``torchrun`` too).
- :class:`WithIndex`: a dataset wrapper that appends each item's index (the sample id scores are stored by).
- :mod:`gwa.integrations.loggers`: ``TensorBoardLogger`` and ``WandbLogger``, gwa's values from any loop
  (``RunRecorder(loggers=...)``).

Each imports its framework only when imported itself (``RunRecorder`` imports torch on first use). All share
:class:`EpochMonitor` (stop rule, best epoch, best weights, run directory), so every trainer logs the same keys
and writes the same run directory.
"""

from typing import TYPE_CHECKING

from gwa.integrations._dataset import WithIndex
from gwa.integrations._epoch_values import LOG_KEYS, MONITORS, log_values
from gwa.integrations._monitor import EpochMonitor

if TYPE_CHECKING:  # imported on first use (torch); named here for type checkers and the API reference
    from gwa.integrations._recorder import RECOMMENDED_SIGNALS, RunRecorder

__all__ = [
    "LOG_KEYS",
    "MONITORS",
    "RECOMMENDED_SIGNALS",
    "EpochMonitor",
    "RunRecorder",
    "WithIndex",
    "log_values",
]


def __getattr__(name):
    if name in ("RunRecorder", "RECOMMENDED_SIGNALS"):
        from gwa.integrations import _recorder

        return getattr(_recorder, name)
    raise AttributeError(f"module 'gwa.integrations' has no attribute {name!r}")
