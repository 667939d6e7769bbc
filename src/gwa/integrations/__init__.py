"""Drop-in integrations of :class:`gwa.torch.GWATracker` with the trainers people use.

- :mod:`gwa.integrations.lightning`: ``GWACallback`` for Lightning's ``Trainer``.
- :mod:`gwa.integrations.huggingface`: ``GWATrainerCallback`` for Hugging Face's ``Trainer``.
- ``examples/torchrun_ddp.py``: a plain PyTorch loop under ``torchrun`` (DDP + ``DistributedSampler``).

Each imports its framework only when imported itself. All share :class:`EpochMonitor` (stop rule, best epoch,
best weights, run directory), so every trainer logs the same keys and writes the same run directory.
"""

from gwa.integrations._monitor import MONITORS, EpochMonitor

__all__ = ["MONITORS", "EpochMonitor"]
