"""``summary.json``: one versioned schema, :class:`RunSummary`, written by every surface and read without guessing.

Every trainer (``gwa train`` with torch or jax, ``RunRecorder``, the Lightning and Hugging Face callbacks) writes
the same keys; what a surface does not know is ``null``, never a missing key or another shape. Summaries of gwa
0.2 (no ``summary_format``: the callbacks' shape with ``monitor``/``best_epoch``, ``gwa train``'s with
``default``/``epochs_run``/``noise``) are upgraded on read by :func:`upgrade_summary`, as format-1 metric rows are
by :func:`gwa.rundir.upgrade_row`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

#: The version of the summary's schema; 1 is gwa 0.2's two shapes (no ``summary_format`` key), upgraded on read.
SUMMARY_FORMAT = 2


class RunSummary(TypedDict):
    """The run's ``summary.json`` (see docs/run-directory.md for each field).

    Every key is always present; a value a surface cannot know is ``None``.
    """

    format: int  # the run directory's format (gwa.rundir.FORMAT)
    summary_format: int  # SUMMARY_FORMAT
    default: str  # gwa's default criterion (gwa.DEFAULT_CRITERION)
    monitor: str  # the criterion the stop rule followed
    criteria: dict[str, dict[str, Any]]  # {name: {"epoch": e (1-based), "test_acc": ..., ...}}: each choice
    best_epoch: (
        int | None
    )  # the epoch the run keeps: the monitor's choice (or the veto's among its candidates)
    stopped_epoch: int | None  # where the stop rule stopped training; None: it ran its planned epochs
    decision: str | None  # the stop rule's last decision in words
    epochs_run: int  # epochs logged in metrics.jsonl
    epochs_planned: int | None  # the planned epochs (fix the warm-up); None when not known
    final_test_acc: float | None  # the last epoch's test_acc, when one was logged
    diagnostics: list[
        dict[str, Any]
    ]  # gwa.policy.diagnose on the monitor's choice (code, message, action, ...)
    noise_estimate: dict[str, Any] | None  # the noise map (gwa.policy.NoiseMap.to_dict() and its description)
    num_samples: int | None  # N, the training samples
    realised_noise_rate: float | None  # gwa train: the share of labels the added noise flipped
    noise: dict[str, Any] | None  # gwa train: the noise asked for: kind, rate_requested, num_noisy
    best_checkpoint: (
        dict[str, Any] | None
    )  # gwa train: best_<default>.json (epoch, file; stale and note if so)
    best_model_dir: str | None  # Hugging Face: the folder of the best epoch's model (save_pretrained)


#: The keys of :class:`RunSummary`, in the order they are written.
SUMMARY_KEYS: tuple[str, ...] = tuple(RunSummary.__annotations__)


def _default_criterion() -> str:
    from gwa.policy import DEFAULT_CRITERION

    return DEFAULT_CRITERION


def run_summary(fields: Mapping[str, Any]) -> RunSummary:
    """A complete :class:`RunSummary` from ``fields``: the keys not given are filled (``None``, or what the others
    imply: ``best_epoch`` from ``criteria``, ``epochs_run`` 0); what :meth:`RunWriter.write_summary` writes.

    Raises:
        ValueError: for a key that is not a field of :class:`RunSummary`.
    """
    from gwa.rundir._format import FORMAT

    if not isinstance(fields, Mapping):
        raise TypeError(f"Expected the summary as a mapping; got {type(fields).__name__}.")
    unknown = sorted(set(fields) - set(SUMMARY_KEYS))
    if unknown:
        raise ValueError(
            f"Expected summary.json's keys among the RunSummary fields ({', '.join(SUMMARY_KEYS)}); got "
            f"{', '.join(map(repr, unknown))}."
        )
    out: dict[str, Any] = {key: fields.get(key) for key in SUMMARY_KEYS}
    out["format"], out["summary_format"] = fields.get("format") or FORMAT, SUMMARY_FORMAT
    out["default"] = out["default"] or _default_criterion()
    out["monitor"] = out["monitor"] or out["default"]
    out["criteria"] = dict(out["criteria"] or {})
    if out["best_epoch"] is None and "best_epoch" not in fields:
        out["best_epoch"] = (out["criteria"].get(out["monitor"]) or {}).get("epoch")
    out["epochs_run"] = int(out["epochs_run"] or 0)
    if out["diagnostics"] is not None:
        out["diagnostics"] = list(out["diagnostics"])
    return out  # type: ignore[return-value]  # every key of RunSummary is set above


def upgrade_summary(summary: Mapping[str, Any], epochs_run: int | None = None) -> RunSummary:
    """A ``summary.json`` of any readable version as a :class:`RunSummary` (keys of a newer gwa are dropped).

    gwa 0.2 wrote two shapes without ``summary_format``: the callbacks' (``monitor``, ``best_epoch``,
    ``stopped_epoch``, ``decision``) and ``gwa train``'s (``default``, ``epochs_run``, ``epochs_planned``,
    ``final_test_acc``, ``best_checkpoint``, ``noise`` with ``rate_actual``); each gets the other's keys as
    ``None`` (``epochs_run`` from ``epochs_run=``, the logged epochs), and ``noise.rate_actual`` becomes
    ``realised_noise_rate``.
    """
    fields = {k: v for k, v in summary.items() if k in SUMMARY_KEYS}
    noise = fields.get("noise")
    if isinstance(noise, Mapping) and "rate_actual" in noise:  # gwa 0.2: the same number twice
        noise = dict(noise)
        actual = noise.pop("rate_actual")
        fields["noise"] = noise
        if fields.get("realised_noise_rate") is None:
            fields["realised_noise_rate"] = actual
    if fields.get("epochs_run") is None and epochs_run is not None:
        fields["epochs_run"] = epochs_run
    return run_summary(fields)
