"""The run directory: the contract between training (any trainer) and analysis (report, flag, compare).

Layout (``FORMAT`` = 2; format-1 runs are still read), all plain files::

    RUN/
      config.json            {"format": 2, "gwa_version": ..., "status": "running"|"complete", ...run config}
      metrics.jsonl          one JSON object per finished epoch (keys below), appended as epochs end
      classes.jsonl          optional: per epoch, the per-class evidence {"epoch": e, **gwa.ClassEvidence.to_dict()}
                             (per given label: count, alignment moments, negative share, and the C x C counts
                             of negatively aligned samples by (given label, predicted class))
      labels.npy             int64 (N,): the training labels used, indexed by sample id
      clean_labels.npy       int64 (N,): the labels before noise injection (when known)
      noise_mask.npy         bool (N,): True where the training label was changed (when known)
      scores/alignment_0001.npy   float32 (N,): epoch 1's alignment per sample id, NaN where unseen
      scores/<signal>_0001.npy    optional further per-sample signals (loss, margin, p_gold, el2n, correct)
      source_index.npy       int64 (N,): each sample id's index in the source dataset (written by gwa train)
      previews.npy, preview_ids.npy   optional inputs of some samples for the report's thumbnails:
                             (K, H, W), (K, H, W, 3) images or (K, L) 1-D signals, and their sample ids (K,)
      summary.json           at the end: a :class:`RunSummary` (``summary_format`` SUMMARY_FORMAT; every surface writes
                             the same keys, null where unknown; gwa 0.2's two shapes are upgraded on read)
      checkpoints/           framework checkpoints: last.json names the file resume reads (last-0005.pt),
                             best_<criterion>.json its file; never read by the analysis side
      gwa.lock               advisory lock held by the one process writing the run (holds its pid)

Epochs are numbered from 1. Metric keys written by gwa's trainers (absent or ``null`` when not measured):
``epoch, step, lr, train_loss, train_acc``, the alignment keys of :meth:`gwa.EpochSummary.metrics` (``align_mean,
align_std, align_excess_kurtosis, gwa`` (the default criterion's value), ``gwa_paper, gwa_paper_flagged, gwa_guard``
(a :class:`gwa.GuardCode` value), ``gwa_guard_message, n_scores, n_undefined``), n_duplicates, n_non_finite, val_acc (noisy-label split), val_acc_clean, val_size,
test_acc, eval_<name>_acc, prediction_changes, grad_disparity, wall_time`` plus any extra scalar a trainer logs.
Non-finite floats are written as ``null``.

Safety (docs/reliability.md): a run directory is a gwa run when its ``config.json`` carries ``format`` and
``gwa_version``; ``overwrite`` replaces only such a run and deletes only the files gwa writes. One writer at a
time holds ``gwa.lock``. Every file is written to a temporary name, synced and renamed, so a kill leaves each
file either old or new, through a temporary of a unique name that never follows a link. A run whose fixed
entries are links or special files is refused, every read is capped and never blocks (``_safety``). Nothing here
reads or writes a pickle.
"""

from gwa.rundir._atomic import FAULT_ENV, save_npy_atomic, write_atomic, write_json_atomic
from gwa.rundir._classes import CLASSES_FILE, class_row
from gwa.rundir._errors import RunDirError, RunDirWarning
from gwa.rundir._format import (
    CHECKPOINT_DIR,
    FORMAT,
    LOCK_FILE,
    OWN_FILES,
    READABLE_FORMATS,
    REPORT_DIR,
    SCORES_DIR,
    is_own_checkpoint,
    own_files,
    score_file,
    upgrade_row,
)
from gwa.rundir._lock import RunLock
from gwa.rundir._reader import (
    MetricsProblem,
    MetricsScan,
    Run,
    load_array,
    load_run,
    parse_json,
    read_config,
    read_metrics,
    scan_metrics,
)
from gwa.rundir._safety import (
    MAX_JSON_BYTES,
    MAX_NPY_BYTES,
    check_run_tree,
    load_npy,
    open_regular,
    read_regular,
)
from gwa.rundir._summary import (
    SUMMARY_FORMAT,
    SUMMARY_KEYS,
    RunSummary,
    run_summary,
    upgrade_summary,
)
from gwa.rundir._target import check_directory, check_writable, is_gwa_run
from gwa.rundir._writer import RunWriter

__all__ = [
    "CHECKPOINT_DIR",
    "CLASSES_FILE",
    "FAULT_ENV",
    "FORMAT",
    "LOCK_FILE",
    "MAX_JSON_BYTES",
    "MAX_NPY_BYTES",
    "OWN_FILES",
    "READABLE_FORMATS",
    "REPORT_DIR",
    "SCORES_DIR",
    "SUMMARY_FORMAT",
    "SUMMARY_KEYS",
    "MetricsProblem",
    "MetricsScan",
    "Run",
    "RunDirError",
    "RunDirWarning",
    "RunLock",
    "RunSummary",
    "RunWriter",
    "check_directory",
    "check_run_tree",
    "check_writable",
    "class_row",
    "is_gwa_run",
    "is_own_checkpoint",
    "load_array",
    "load_npy",
    "load_run",
    "open_regular",
    "own_files",
    "parse_json",
    "read_config",
    "read_metrics",
    "read_regular",
    "run_summary",
    "save_npy_atomic",
    "scan_metrics",
    "score_file",
    "upgrade_row",
    "upgrade_summary",
    "write_atomic",
    "write_json_atomic",
]
