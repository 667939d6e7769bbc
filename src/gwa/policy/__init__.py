"""The decision gwa makes for its users, written once: which epoch to keep, when to stop, which samples to flag.

Pure functions over a run's history of :class:`gwa.EpochSummary` (or metric rows), numpy only; every surface
(a user's loop, the Lightning and Hugging Face callbacks, ``gwa train``, the report) decides through them.
"""

from gwa.policy._criteria import CRITERIA
from gwa.policy._criteria import DEFAULT_CRITERION
from gwa.policy._criteria import MONITORABLE
from gwa.policy._criteria import WARMUP_FRACTION
from gwa.policy._criteria import Criterion
from gwa.policy._criteria import as_rows
from gwa.policy._criteria import choose
from gwa.policy._criteria import monitor_value
from gwa.policy._criteria import select_all
from gwa.policy._criteria import select_epoch
from gwa.policy._criteria import series
from gwa.policy._criteria import warmup_epochs
from gwa.policy._diagnostics import Diagnostic
from gwa.policy._diagnostics import diagnose
from gwa.policy._flags import DEFAULT_FLAG_RULE
from gwa.policy._flags import DEFAULT_LAST_K
from gwa.policy._flags import DEFAULT_THRESHOLDS
from gwa.policy._flags import FLAG_RULES
from gwa.policy._flags import check_flag_options
from gwa.policy._flags import flag_scores
from gwa.policy._noise_rate import NOISE_RATE_METHODS
from gwa.policy._noise_rate import NoiseRateEstimate
from gwa.policy._noise_rate import estimate_noise_rate
from gwa.policy._stopper import EarlyStopper
from gwa.policy._stopper import StopReason

__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "DEFAULT_FLAG_RULE", "DEFAULT_LAST_K", "DEFAULT_THRESHOLDS", "FLAG_RULES",
    "MONITORABLE", "WARMUP_FRACTION", "Criterion", "EarlyStopper", "StopReason", "as_rows", "check_flag_options",
    "choose", "flag_scores", "monitor_value", "select_all", "select_epoch", "series", "warmup_epochs",
    "NOISE_RATE_METHODS", "Diagnostic", "NoiseRateEstimate", "diagnose", "estimate_noise_rate",
]
