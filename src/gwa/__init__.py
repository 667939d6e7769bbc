"""gwa: Gradient-Weight Alignment, a validation-free train-time proxy for generalization.

The numpy core lives here; framework adapters are ``gwa.torch`` and ``gwa.jax``, imported only on use.
"""

from gwa._kernel import UNDEFINED_SCORE
from gwa._kernel import alignment
from gwa._moments import Moments
from gwa._stopping import EarlyStopper
from gwa._stopping import select_epoch
from gwa._summary import PAPER_BETA
from gwa._summary import EpochSummary
from gwa._summary import gwa_value
from gwa._summary import summarize

__version__ = "0.1.0"

__all__ = [
    "EarlyStopper",
    "EpochSummary",
    "Moments",
    "PAPER_BETA",
    "UNDEFINED_SCORE",
    "alignment",
    "gwa_value",
    "select_epoch",
    "summarize",
]
