"""What ``gwa train`` runs: the backend-independent runner, which trains a model and writes a run directory.

The runner prepares the data (subset, label noise, validation split), opens the run directory and the epoch loop
(:class:`gwa.runner.loop.EpochLoop`, whose :class:`gwa.integrations.EpochMonitor` records every epoch), hands the
epochs to a backend, then writes the previews and concludes the run through the monitor (``summary.json``, a
:class:`gwa.rundir.RunSummary` with what only ``gwa train`` knows: the label noise it added, its best checkpoint).
A backend is a module with one function::

    train(config: RunConfig, data: PreparedData, loop: EpochLoop, *, start_epoch: int, progress: bool) -> None

It must, for epochs ``start_epoch + 1 .. config.epochs``: train one epoch, hand it to
:meth:`gwa.runner.loop.EpochLoop.end_epoch` (evaluation, then the monitor: the metrics row and scores in the run
directory, the stop decision of the core policy), save ``best_<DEFAULT_CRITERION>`` when the outcome says the
epoch is the best so far and ``checkpoints/last.*`` (with the loop's state), commit each with
:func:`gwa.runner.checkpoint.commit`, and stop when the outcome says so. With ``start_epoch > 0`` it first
restores its ``last`` checkpoint, which holds epoch ``start_epoch``, and the loop's state. Backends:
``gwa.runner.train_torch`` and ``gwa.runner.train_jax``.

Distributed (``torchrun``, torch backend): every rank runs the runner and the backend; ranks other than 0 get
a :class:`ReadOnlyWriter` and must leave the run directory (checkpoints included) to rank 0.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import numpy as np

from gwa.runner.config import BACKENDS, RunConfig
from gwa.runner.summary import summary_fields

log = logging.getLogger(__name__)

#: Inputs up to this size are stored whole as previews; larger sets store the most negatively aligned samples.
PREVIEW_ALL_BYTES = 8 * 2**20
PREVIEW_COUNT = 256


# ---------------------------------------------------------------------------------------------- runner


def run_training(config: RunConfig, *, progress: bool = True) -> Path:
    """Train ``config`` with its backend and write the run directory; returns its path."""
    from gwa import rundir
    from gwa.runner import checkpoint, resume_checks
    from gwa.runner.data import prepare
    from gwa.runner.loop import EpochLoop

    out = config.out_dir
    rank = process_rank()
    start_epoch = 0
    lock = None
    try:
        if config.resume:
            rundir.read_config(out)  # a run of this format is there
            if rank == 0:  # hold the run from before its checkpoint is read until it is written
                lock = rundir.RunLock(out).acquire()
            info = checkpoint.read_mark(out, "last")
            if info is None:  # killed before its first checkpoint: what it logged is redone, identically
                logged = len(rundir.scan_metrics(out).rows)
                log.warning(
                    "%s has no checkpoint yet; resuming from the start%s.",
                    out,
                    f" (its {logged} logged epoch(s) are recomputed)" if logged else "",
                )
                info = {"epoch": 0, "backend": config.backend}
            if info["backend"] != config.backend:
                raise ValueError(
                    f"Cannot resume {out} with backend {config.backend!r}: its checkpoint was written "
                    f"by {info['backend']!r}."
                )
            start_epoch = int(info["epoch"])
            if config.epochs < start_epoch:  # the config would say one length and the metrics another
                raise ValueError(
                    f"Cannot resume {out} with --epochs {config.epochs}: it already holds "
                    f"{start_epoch} epochs (--epochs may only grow when resuming)."
                )
        elif rank == 0:  # fail before preparing the data; the writer checks again under the run's lock
            rundir.check_writable(
                out,
                overwrite=config.overwrite,
                hint="pass --resume to continue it or --overwrite to replace it (or choose another --out)",
            )
        backend = load_backend(config.backend)
        data = prepare(config)
        if config.resume:  # on every rank, before anything in the run is written
            resume_checks.check_same_data(out, rundir.read_config(out), data)
        if rank != 0:  # distributed: rank 0 alone writes the run directory
            if start_epoch < config.epochs:  # the same branch as rank 0's, or its peers wait forever
                loop = EpochLoop(config, data, ReadOnlyWriter(out))
                backend.train(config, data, loop, start_epoch=start_epoch, progress=False)
            return out
        if progress and config.noise != "none":
            print(describe_noise(config, data), flush=True)
        writer = rundir.RunWriter(
            out,
            {
                **config.to_dict(),
                "realised_noise_rate": data.realised_noise_rate,
                resume_checks.FINGERPRINT_KEY: resume_checks.data_fingerprint(data),
                # class names and the source set's size: gwa flag's names and its export by source index
                "class_names": list(data.classes),
                "source_size": data.source_size,
            },
            data.num_samples,
            labels=data.y_train,
            clean_labels=data.y_train_clean,
            noise_mask=data.noise_mask,
            resume=config.resume,
            resume_epoch=start_epoch if config.resume else None,
            overwrite=config.overwrite,
            lock=lock,
        )
        try:
            writer.write_array("source_index", data.source_index)
            loop = EpochLoop(config, data, writer, echo=progress, loggers=make_loggers(config))
            if start_epoch < config.epochs:
                backend.train(config, data, loop, start_epoch=start_epoch, progress=progress)
            else:  # resumed at its end: the decisions again from what the run directory holds
                loop.replay()
            write_previews(writer, data)
            loop.finish(summary_fields(loop.monitor.rows, config, data, out))  # summary.json, status complete
        finally:
            writer.close()
    finally:
        if lock is not None:
            lock.release()
    return out


def make_loggers(config: RunConfig) -> list:
    """``--tensorboard`` and ``--wandb``: the loggers of :mod:`gwa.integrations.loggers` (rank 0 only)."""
    from gwa.integrations.loggers import TensorBoardLogger, WandbLogger

    loggers: list = []
    if config.tensorboard:
        loggers.append(TensorBoardLogger(config.tensorboard))
    if config.wandb:
        loggers.append(WandbLogger(project=config.wandb, name=config.run_name, config=config.to_dict()))
    return loggers


def describe_noise(config: RunConfig, data) -> str:
    """The line ``gwa train`` prints before training: the noise asked for and the share of labels it flipped."""
    from gwa.runner import noise

    source = None
    if config.noise == "file":
        source = Path(str(config.noise_file)).name + (f"[{config.noise_key}]" if config.noise_key else "")
    return noise.describe_realised(
        config.noise,
        config.noise_rate,
        data.noise_mask,
        pairs=data.noise_pairs,
        class_names=data.classes,
        source=source,
    )


def process_rank() -> int:
    """This process's rank under ``torchrun`` (its ``RANK`` variable); 0 when not distributed."""
    return int(os.environ.get("RANK", "0"))


class ReadOnlyWriter:
    """The writer of ranks other than 0 in a distributed run: same ``path``, writes nothing."""

    def __init__(self, path):
        self.path = Path(path)

    def log_epoch(self, metrics: dict, scores=None) -> None:
        pass

    def log_classes(self, row: dict) -> None:
        pass


def load_backend(name: str):
    module = {"torch": "gwa.runner.train_torch", "jax": "gwa.runner.train_jax"}.get(name)
    if module is None:
        raise ValueError(f"Expected `backend` to be one of {', '.join(BACKENDS)}; got {name!r}.")
    return importlib.import_module(module)


def write_previews(writer, data) -> None:
    """All training inputs when small, else the :data:`PREVIEW_COUNT` with the lowest recent alignment."""
    from gwa.rundir import load_run

    n = data.num_samples
    if data.x_train.nbytes <= PREVIEW_ALL_BYTES:
        ids = np.arange(n)
    else:
        run = load_run(writer.path)
        recent = run.score_matrix()[-3:]
        if recent.shape[0] == 0:
            ids = np.arange(min(n, PREVIEW_COUNT))
        else:
            finite = np.isfinite(recent)
            count = finite.sum(axis=0)
            total = np.where(finite, recent, 0.0).sum(axis=0)
            mean = np.where(count > 0, total / np.maximum(count, 1), np.inf)  # never-seen samples go last
            ids = np.sort(np.argsort(mean, kind="stable")[:PREVIEW_COUNT])
    x = data.raw(data.x_train[ids])
    if x.ndim == 4:
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3] if x.shape[-1] >= 3 else x[..., 0]
    writer.write_previews(ids, x.astype(np.float32))
