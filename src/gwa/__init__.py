"""gwa: Gradient-Weight Alignment, a validation-free train-time proxy for generalization.

The numpy core lives here; framework adapters are ``gwa.torch`` and ``gwa.jax``, imported only on use.
"""

from gwa._class_evidence import ClassEvidence, class_evidence
from gwa._kernel import UNDEFINED_SCORE, alignment
from gwa._moments import Moments
from gwa._summary import PAPER_BETA, EpochSummary, Guard, GuardCode, gwa_value, pearson_ratio, summarize
from gwa.policy import DEFAULT_CRITERION, EarlyStopper, StopReason, select_epoch

__version__ = "0.1.0"

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
