"""``gwa train``: train a model on a dataset and write a run directory; and the backend-independent runner.

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

import argparse
import dataclasses
import importlib
import logging
import os
from pathlib import Path

import numpy as np

from gwa.runner.config import BACKENDS, DATASETS, DEVICES, NOISES, OPTIMIZERS, SCHEDULES, RunConfig
from gwa.runner.summary import print_summary, summary_fields

log = logging.getLogger(__name__)

#: Inputs up to this size are stored whole as previews; larger sets store the most negatively aligned samples.
PREVIEW_ALL_BYTES = 8 * 2**20
PREVIEW_COUNT = 256
#: Options that may differ from the saved config when resuming.
RESUMABLE_CHANGES = ("epochs", "quiet", "device", "resume", "overwrite", "tensorboard", "wandb")


# ---------------------------------------------------------------------------------------------- command line


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _eval_set(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH.npz, got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gwa train``; every default lives in :class:`RunConfig` (None here = not given)."""
    d = RunConfig()
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help=f"{' | '.join(DATASETS)} (default {d.dataset})")
    data.add_argument(
        "--data-dir", help="folder with the dataset's files (fashion-mnist IDX, cifar10, imagefolder)"
    )
    data.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="allow downloading CIFAR-10 into --data-dir, or timm's pretrained weights",
    )
    data.add_argument("--num-train", type=int, help="stratified random subset of the training set")
    data.add_argument(
        "--classes",
        type=_csv_ints,
        help="keep only these class ids, e.g. 5,6,7,8,9 (train and test; relabelled 0..k-1 in this order)",
    )
    data.add_argument(
        "--mnist1d-samples", type=int, help=f"mnist1d: samples to generate (default {d.mnist1d_samples})"
    )
    data.add_argument(
        "--val-frac",
        type=float,
        help="hold out this fraction of training as a noisy-label "
        "validation split (e.g. 0.1; default 0 = none)",
    )
    data.add_argument(
        "--veto-frac",
        type=float,
        nargs="?",
        const=0.02,
        metavar="F",
        help="hold out F of the training set (default 0.02 when given without F) as a noisy-label split "
        "whose accuracy (veto_acc) only chooses among gwa's own candidate epochs, never a free argmax",
    )
    data.add_argument(
        "--eval-set",
        type=_eval_set,
        action="append",
        metavar="NAME=PATH.npz",
        help="extra test set (arrays x, y) evaluated every epoch; repeatable",
    )
    noise = parser.add_argument_group("label noise")
    noise.add_argument("--noise", help=f"{' | '.join(NOISES)} (default {d.noise})")
    noise.add_argument(
        "--noise-rate",
        type=float,
        help="symmetric: fraction of all labels to flip; asymmetric: fraction of each source class of the "
        "dataset's class pairs (e.g. fashion-mnist T-shirt<->shirt, pullover<->coat, sneaker<->ankle boot), so "
        "fewer labels flip overall (0.3 flips about 18%% of fashion-mnist); instance: fraction of all labels, each flipped towards the class a reference model confuses it with; the realised rate is printed and saved",
    )
    noise.add_argument("--noise-file", help="labels to train on: .npy, or CIFAR-10-N's CIFAR-10_human.pt")
    noise.add_argument(
        "--noise-key", help="label set in a .pt file: aggre_label, random_label1, worse_label, ..."
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", help=f"mlp | cnn | resnet | timm:<name> (default {d.model})")
    model.add_argument("--hidden", type=_csv_ints, help="mlp hidden widths, e.g. 256,256")
    model.add_argument("--width", type=int, help=f"cnn/resnet base channels (default {d.width})")
    model.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="timm: start from pretrained weights (from the local cache unless --download)",
    )
    model.add_argument("--init-checkpoint", help="start from this state_dict (.pt)")
    model.add_argument(
        "--finetune",
        action="store_true",
        default=None,
        help="choose epochs with the paper's fine-tuning rule",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--optimizer", help=f"{' | '.join(OPTIMIZERS)} (default {d.optimizer})")
    opt.add_argument("--lr", type=float, help=f"learning rate (default {d.lr:g})")
    opt.add_argument("--momentum", type=float, help=f"sgd momentum (default {d.momentum:g})")
    opt.add_argument("--weight-decay", type=float, help=f"weight decay (default {d.weight_decay:g})")
    opt.add_argument("--schedule", help=f"{' | '.join(SCHEDULES)} (default {d.schedule})")
    opt.add_argument("--warmup-epochs", type=int, help="warm-up epochs for warmup_cosine")
    opt.add_argument("--epochs", type=int, help=f"(default {d.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    opt.add_argument("--seed", type=int, help=f"(default {d.seed})")
    opt.add_argument("--device", help=f"{' | '.join(DEVICES)} (default {d.device}: cuda > mps > cpu)")
    opt.add_argument("--amp", action="store_true", default=None, help="bf16 mixed precision (GPU only)")
    opt.add_argument(
        "--augment",
        action="store_true",
        default=None,
        help="random shifts of up to 2 pixels and left-right flips of the training batches (1-D: shifts)",
    )
    opt.add_argument(
        "--init-perturb",
        type=float,
        metavar="REL",
        help="re-execution check: multiply the initial weights by 1 + REL * N(0, 1), e.g. 1e-6 (default 0)",
    )
    opt.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    track = parser.add_argument_group("tracking")
    track.add_argument(
        "--signals",
        type=_csv,
        help=f"per-sample signals to store besides alignment (default {','.join(d.signals)}; '' for none)",
    )
    track.add_argument(
        "--align-bias", action="store_true", default=None, help="include the head bias in alignment"
    )
    track.add_argument(
        "--gradient-disparity",
        action="store_true",
        default=None,
        help="also log the Gradient Disparity baseline each epoch (extra backward passes)",
    )
    track.add_argument(
        "--early-stop",
        type=int,
        metavar="PATIENCE",
        help="stop when GWA has not improved for PATIENCE epochs",
    )
    run = parser.add_argument_group("run directory")
    run.add_argument("--out", help="run directory (default runs/<name>)")
    run.add_argument("--name", help="run name (default from dataset, model, noise and seed)")
    run.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out from its last checkpoint (its saved options are used)",
    )
    run.add_argument("--overwrite", action="store_true", default=None, help="replace a run already in --out")
    run.add_argument("--backend", help=f"{' | '.join(BACKENDS)} (default {d.backend})")
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=None,
        help="print no progress bar and no line per epoch (the final summary is still printed)",
    )
    run.add_argument(
        "--tensorboard", metavar="DIR", help="also log each epoch to TensorBoard event files in DIR"
    )
    run.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log each epoch to this Weights & Biases project (WANDB_MODE=offline)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config: defaults, then the given options; on --resume the saved config, then allowed changes."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "eval_set" in vars(args) and args.eval_set:
        given["eval_sets"] = dict(args.eval_set)
    if not given.get("resume"):
        return RunConfig(**given)
    from gwa.rundir import read_config

    out = Path(given.get("out") or RunConfig(**{**given, "resume": False}).out_dir)
    saved = read_config(out)
    saved_config = RunConfig.from_dict({**saved, "resume": False, "overwrite": False})
    for key, value in given.items():
        if key in RESUMABLE_CHANGES or key == "out":
            continue
        if _normalise(value) != _normalise(getattr(saved_config, key)):
            raise ValueError(
                f"Cannot change `{key}` when resuming {out}: it was {getattr(saved_config, key)!r}, "
                f"got {value!r} (drop the option, or start a new run)."
            )
    return saved_config.replace(**{k: v for k, v in given.items() if k in RESUMABLE_CHANGES}, out=str(out))


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = run_training(config, progress=not config.quiet)
    if process_rank() == 0:
        print_summary(out)
    return 0


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
