"""The decision gwa makes for its users, written once: which epoch to keep, when to stop, which samples to flag.

Pure functions over a run's history of :class:`gwa.EpochSummary` (or metric rows), numpy only; every surface
(a user's loop, the Lightning and Hugging Face callbacks, ``gwa train``, the report) decides through them.
"""

from gwa.policy._criteria import (
    CRITERIA,
    DEFAULT_CRITERION,
    MONITORABLE,
    WARMUP_FRACTION,
    Criterion,
    as_rows,
    choose,
    monitor_value,
    select_all,
    select_epoch,
    series,
    warmup_epochs,
)
from gwa.policy._diagnostics import Diagnostic, diagnose
from gwa.policy._flags import (
    DEFAULT_FLAG_RULE,
    DEFAULT_LAST_K,
    DEFAULT_THRESHOLDS,
    FLAG_RULES,
    check_flag_options,
    flag_scores,
    flag_window,
)
from gwa.policy._noise_rate import NOISE_RATE_METHODS, NoiseRateEstimate, estimate_noise_rate
from gwa.policy._stopper import EarlyStopper, StopReason
from gwa.policy._transient import TRANSIENT_ACC_GAP, after_transient_epoch, past_transient

__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "DEFAULT_FLAG_RULE",
    "DEFAULT_LAST_K",
    "DEFAULT_THRESHOLDS",
    "FLAG_RULES",
    "MONITORABLE",
    "NOISE_RATE_METHODS",
    "TRANSIENT_ACC_GAP",
    "WARMUP_FRACTION",
    "Criterion",
    "Diagnostic",
    "EarlyStopper",
    "NoiseRateEstimate",
    "StopReason",
    "after_transient_epoch",
    "as_rows",
    "check_flag_options",
    "choose",
    "diagnose",
    "estimate_noise_rate",
    "flag_scores",
    "flag_window",
    "monitor_value",
    "past_transient",
    "select_all",
    "select_epoch",
    "series",
    "warmup_epochs",
]
