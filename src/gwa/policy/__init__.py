"""The decision gwa makes for its users, written once: which epoch to keep, when to stop, which samples to flag.

Per-class evidence (:class:`gwa.ClassEvidence`, in the rows' ``class_evidence`` key) feeds the noise map
(:func:`estimate_noise_map`, :func:`noise_map_of_run`), the ``class_conditional`` diagnostic, the class-aware
criteria (``class_*`` in :data:`CRITERIA`) and the tiny-split veto (:func:`choose_with_veto`,
``EarlyStopper(veto=True)``).

Pure functions over a run's history of :class:`gwa.EpochSummary` (or metric rows), numpy only; every surface
(a user's loop, the Lightning and Hugging Face callbacks, ``gwa train``, the report) decides through them.
"""

from gwa.policy._class_criteria import VETO_CANDIDATES, candidate_epochs, choose_with_veto
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
from gwa.policy._diagnostics import Diagnostic, diagnose, is_class_conditional
from gwa.policy._flags import (
    DEFAULT_FLAG_RULE,
    DEFAULT_LAST_K,
    DEFAULT_THRESHOLDS,
    FLAG_RULES,
    PAIR_SLACK,
    check_flag_options,
    choose_flag_rule,
    flag_scores,
    flag_window,
)
from gwa.policy._noise_map import (
    NoiseMap,
    ambiguous_share,
    estimate_noise_map,
    is_ambiguous,
    noise_map_of_run,
    noise_map_window,
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
    "PAIR_SLACK",
    "TRANSIENT_ACC_GAP",
    "VETO_CANDIDATES",
    "WARMUP_FRACTION",
    "Criterion",
    "Diagnostic",
    "EarlyStopper",
    "NoiseMap",
    "NoiseRateEstimate",
    "StopReason",
    "after_transient_epoch",
    "ambiguous_share",
    "as_rows",
    "candidate_epochs",
    "check_flag_options",
    "choose",
    "choose_flag_rule",
    "choose_with_veto",
    "diagnose",
    "estimate_noise_map",
    "estimate_noise_rate",
    "flag_scores",
    "flag_window",
    "is_ambiguous",
    "is_class_conditional",
    "monitor_value",
    "noise_map_of_run",
    "noise_map_window",
    "past_transient",
    "select_all",
    "select_epoch",
    "series",
    "warmup_epochs",
]
