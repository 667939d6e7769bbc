"""gwa: Gradient-Weight Alignment, a validation-free train-time proxy for generalization.

The numpy core lives here; the framework adapters ``gwa.torch`` and ``gwa.jax`` are attributes loaded on first
use (``import gwa; gwa.jax.alignment``), so ``import gwa`` imports neither torch nor jax.
"""

import importlib
from typing import Any

from gwa._class_evidence import ClassEvidence, class_evidence
from gwa._kernel import UNDEFINED_SCORE, alignment
from gwa._moments import Moments
from gwa._summary import PAPER_BETA, EpochSummary, Guard, GuardCode, gwa_value, pearson_ratio, summarize
from gwa.policy import DEFAULT_CRITERION, EarlyStopper, StopReason, select_epoch

__version__ = "0.2.0"

#: Submodules that import a framework: loaded by ``__getattr__`` on first access (PEP 562), as numpy and scipy do.
_LAZY_SUBMODULES = ("torch", "jax")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        # import_module binds the submodule as an attribute of gwa, so later accesses skip this function.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_SUBMODULES])


__all__ = [
    "DEFAULT_CRITERION",
    "PAPER_BETA",
    "UNDEFINED_SCORE",
    "ClassEvidence",
    "EarlyStopper",
    "EpochSummary",
    "Guard",
    "GuardCode",
    "Moments",
    "StopReason",
    "alignment",
    "class_evidence",
    "gwa_value",
    "pearson_ratio",
    "select_epoch",
    "summarize",
]
