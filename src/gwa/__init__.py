"""gwa: Gradient-Weight Alignment, a validation-free train-time proxy for generalization.

The numpy core lives here; framework adapters are ``gwa.torch`` and ``gwa.jax``, imported only on use.
"""

from gwa._kernel import UNDEFINED_SCORE
from gwa._kernel import alignment
from gwa._moments import Moments
from gwa._summary import PAPER_BETA
from gwa._summary import EpochSummary
from gwa._summary import Guard
from gwa._summary import GuardCode
from gwa._summary import gwa_value
from gwa._summary import pearson_ratio
from gwa._summary import summarize
from gwa.policy import DEFAULT_CRITERION
from gwa.policy import EarlyStopper
from gwa.policy import StopReason
from gwa.policy import select_epoch

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CRITERION",
    "EarlyStopper",
    "EpochSummary",
    "Guard",
    "GuardCode",
    "Moments",
    "PAPER_BETA",
    "StopReason",
    "UNDEFINED_SCORE",
    "alignment",
    "gwa_value",
    "pearson_ratio",
    "select_epoch",
    "summarize",
]
