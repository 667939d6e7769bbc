"""What ``--resume`` checks before it touches a run: the same training data, and a best checkpoint still chosen.

A resumed run must train on the data its logged epochs saw; otherwise the old epochs' scores would sit next to
labels they were not computed with. ``config.json`` records a fingerprint of the prepared training set (its
size, classes, and hashes of the labels, the clean labels and each sample's index in the source dataset); a
resume whose data differs is refused, naming what changed, before anything in the run is written.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: The key of the fingerprint in ``config.json``.
FINGERPRINT_KEY = "data_fingerprint"


def _digest(array) -> str:
    arr = np.ascontiguousarray(np.asarray(array, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def data_fingerprint(data) -> dict:
    """The fingerprint of a :class:`gwa.runner.data.PreparedData`'s training set (JSON-serialisable)."""
    return {
        "num_samples": int(data.num_samples),
        "classes": [str(c) for c in data.classes],
        "labels_sha256": _digest(data.y_train),
        "clean_labels_sha256": _digest(data.y_train_clean),
        "source_index_sha256": _digest(data.source_index),
    }


def _label_changes(out: Path, name: str, new: np.ndarray) -> str:
    """``' (12 of 90 samples)'`` when the run's stored ``name.npy`` can be compared, else ``''``."""
    from gwa.rundir import RunDirError, load_array

    try:
        old = load_array(out / f"{name}.npy", len(new), kinds="iu")
    except (RunDirError, OSError):
        return ""
    return f" ({int((old != np.asarray(new)).sum())} of {len(new)} samples)"


def check_same_data(out: Path, saved: dict, data) -> None:
    """Raise ``ValueError`` naming what changed when ``data`` is not the training set of the run in ``out``.

    ``saved`` is the run's ``config.json``. Runs of an older gwa carry no fingerprint: only their size is
    compared (``num_samples``), with a warning that the rest cannot be checked.
    """
    old = saved.get(FINGERPRINT_KEY)
    new = data_fingerprint(data)
    changes = []
    if saved.get("num_samples") != new["num_samples"]:
        changes.append(
            f"the number of training samples ({saved.get('num_samples')} then, {new['num_samples']} now)"
        )
    elif not isinstance(old, dict):
        log.warning(
            "%s records no data fingerprint (an older gwa): resuming without checking that the training "
            "labels are the same.",
            out,
        )
        return
    else:
        if old.get("classes") != new["classes"]:
            changes.append(f"the classes ({old.get('classes')} then, {new['classes']} now)")
        if old.get("source_index_sha256") != new["source_index_sha256"]:
            changes.append(
                "which source samples are used (source_index"
                + _label_changes(out, "source_index", data.source_index)
                + ")"
            )
        if old.get("labels_sha256") != new["labels_sha256"]:
            changes.append("the training labels" + _label_changes(out, "labels", data.y_train))
        elif old.get("clean_labels_sha256") != new["clean_labels_sha256"]:
            changes.append("the clean labels" + _label_changes(out, "clean_labels", data.y_train_clean))
    if changes:
        raise ValueError(
            f"Cannot resume {out}: the dataset changed since its logged epochs were trained: "
            f"{'; '.join(changes)}. Resuming would mix scores computed on different data; start a new run "
            f"(another --out, or --overwrite). Nothing in {out} was changed."
        )


def stale_best_note(best: dict | None, chosen_epoch: int | None) -> str | None:
    """Why ``best`` (``checkpoints/best_gwa.json``) is not the chosen epoch's checkpoint, or None when it is.

    A resume with a longer ``--epochs`` re-plays the stop rule under the new plan (its warm-up grows), so the
    epoch chosen now may differ from the one whose weights were saved under the old plan; those weights cannot
    be re-created, so this says so instead of handing out another epoch's weights.
    """
    if best is None or chosen_epoch is None or int(best.get("epoch", -1)) == int(chosen_epoch):
        return None
    return (
        f"the best checkpoint holds epoch {best.get('epoch')}, but the default criterion now chooses epoch "
        f"{chosen_epoch} (the plan changed on --resume, e.g. a longer --epochs); that epoch's weights were "
        f"not saved"
    )
