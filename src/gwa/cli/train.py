"""``gwa train``: the options (every default lives in :class:`gwa.runner.config.RunConfig`), and the glue that
resolves them into a config, calls :func:`gwa.runner.train.run_training` and prints the run's summary."""

from __future__ import annotations

import argparse
import dataclasses

from gwa.runner.config import (
    BACKENDS,
    DATASETS,
    DEVICES,
    NOISES,
    OPTIMIZERS,
    SCHEDULES,
    RunConfig,
    resolve_config,
)
from gwa.runner.summary import print_summary
from gwa.runner.train import process_rank, run_training


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
    return resolve_config(given)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = run_training(config, progress=not config.quiet)
    if process_rank() == 0:
        print_summary(out)
    return 0
