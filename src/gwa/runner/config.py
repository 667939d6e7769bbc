"""The resolved configuration of one training run: one field per option, validated once, saved as config.json."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASETS = ("digits", "mnist1d", "fashion-mnist", "cifar10", "imagefolder")
MODELS = ("mlp", "cnn", "resnet")  # plus "timm:<name>"
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
NOISES = ("none", "symmetric", "asymmetric", "instance", "file")
BACKENDS = ("torch", "jax")
SIGNALS = ("loss", "margin", "p_gold", "el2n", "pred", "correct")
DEFAULT_SIGNALS = ("loss", "margin", "p_gold", "el2n", "pred")
#: The largest seed every seeded library accepts (numpy's RandomState, which scikit-learn's splits use: 2**32 - 1).
MAX_SEED = 2**32 - 1
#: Options that may differ from the saved config when resuming.
RESUMABLE_CHANGES = ("epochs", "quiet", "device", "resume", "overwrite", "tensorboard", "wandb")


@dataclass
class RunConfig:
    """Every option of ``gwa train``; field names match the command-line flags (``--num-train`` = num_train)."""

    # data
    dataset: str = "digits"  # one of DATASETS
    data_dir: str | None = None  # where the dataset's files are (fashion-mnist, cifar10, imagefolder)
    download: bool = False  # allow downloads: CIFAR-10 into data_dir, timm pretrained weights
    num_train: int | None = None  # stratified, seeded subset of the training set (None = all)
    classes: tuple[int, ...] | None = None  # keep only these class ids (train and test), relabelled 0..k-1
    mnist1d_samples: int = 5000  # mnist1d: samples to generate (80% train, 20% test)
    val_frac: float = 0.0  # stratified hold-out from training (same label noise); 0 = none
    # stratified noisy hold-out whose accuracy only chooses among gwa's candidate epochs (the veto); 0 = none
    veto_frac: float = 0.0
    eval_sets: dict[str, str] = field(default_factory=dict)  # NAME -> .npz with x, y, evaluated each epoch
    # label noise
    noise: str = "none"  # one of NOISES
    noise_rate: float = 0.0  # symmetric/asymmetric/instance: fraction of samples (or of source classes)
    noise_file: str | None = None  # noise="file": .npy labels or CIFAR-10-N's CIFAR-10_human.pt
    noise_key: str | None = None  # key inside a .pt label file (aggre_label, random_label1, worse_label)
    # model
    model: str = "mlp"  # mlp, cnn, resnet or timm:<name>
    hidden: tuple[int, ...] = (256, 256)  # mlp hidden layer widths
    width: int = 32  # cnn/resnet base channel count
    pretrained: bool = False  # timm: load pretrained weights (only from the local cache)
    init_checkpoint: str | None = None  # a state_dict (.pt) to start from
    finetune: bool = False  # choose epochs with the paper's fine-tuning rule
    # optimisation
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd momentum
    weight_decay: float = 0.0  # L2 (sgd, adam) or decoupled (adamw) weight decay
    schedule: str = "constant"  # one of SCHEDULES, stepped per batch
    warmup_epochs: int = 0  # linear warm-up length for warmup_cosine
    epochs: int = 20  # training epochs
    batch_size: int = 128  # training batch size
    seed: int = 0  # seeds model init, subset, noise, split and shuffling
    device: str = "auto"  # one of DEVICES; auto = cuda > mps > cpu
    amp: bool = False  # bf16 autocast (GPU only)
    augment: bool = False  # random shifts (and flips for images) of the training batches, the paper's regime
    init_perturb: float = 0.0  # re-execution check: initial weights times 1 + init_perturb * N(0, 1)
    threads: int | None = None  # torch CPU threads (None = torch's default): another summation order
    # tracking
    signals: tuple[str, ...] = DEFAULT_SIGNALS  # companion per-sample signals to store besides alignment
    align_bias: bool = False  # include the head bias in the alignment (paper: no)
    gradient_disparity: bool = False  # log the Gradient Disparity baseline each epoch
    early_stop: int | None = None  # patience for an online stop on GWA (None = train all epochs)
    # run directory
    out: str | None = None  # run directory (default runs/<name>)
    name: str | None = None  # run name (default from dataset, model, noise, seed)
    resume: bool = False  # continue the run in `out` from its last checkpoint
    overwrite: bool = False  # replace a run already in `out`
    backend: str = "torch"  # one of BACKENDS
    quiet: bool = False  # no progress bar, no line per epoch
    tensorboard: str | None = None  # also log each epoch to TensorBoard event files in this folder
    wandb: str | None = (
        None  # also log each epoch to this Weights & Biases project (WANDB_MODE=offline works)
    )

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if isinstance(self.classes, list):  # from config.json
            self.classes = tuple(self.classes)
        self.signals = tuple(self.signals)
        self.eval_sets = dict(self.eval_sets)
        validate(self)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        noise = "" if self.noise == "none" else f"_{self.noise}{self.noise_rate:g}"
        return f"{self.dataset}_{self.model.replace(':', '-')}{noise}_seed{self.seed}"

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.run_name

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["name"], d["out"] = self.run_name, str(self.out_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


def resolve_config(given: Mapping[str, Any]) -> RunConfig:
    """The run's config from the options given (``RunConfig`` field names; an option not given is absent):
    the defaults, then ``given``; when ``given`` resumes a run, its saved config, then the options that may
    change (:data:`RESUMABLE_CHANGES`). Any other option that differs from the saved one is refused."""
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


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {', '.join(choices)}; got {value!r}.")


def _int_at_least(name: str, value, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Expected `{name}` to be an integer >= {low}; got {value!r}.")


def _number_in(name: str, value, low: float, high: float, *, high_open: bool = False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value
        and (value < high if high_open else value <= high)
    )
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"Expected `{name}` in [{low:g}, {high:g}{bracket}; got {value!r}.")


def _check_classes(c: RunConfig) -> None:
    if c.classes is None:
        return
    ok = (
        isinstance(c.classes, tuple)
        and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in c.classes)
        and len(set(c.classes)) == len(c.classes) >= 2
    )
    if not ok:
        raise ValueError(f"Expected `classes` to be two or more distinct class ids >= 0; got {c.classes!r}.")
    if c.noise == "file":
        raise ValueError(
            "`classes` cannot be combined with noise='file' (the file's labels use the full label space); "
            f"got classes={c.classes!r}."
        )


def validate(c: RunConfig) -> None:
    """Check every field; raise ValueError naming the option, the value and the valid choices."""
    _choice("dataset", c.dataset, DATASETS)
    if not (
        c.model in MODELS or (isinstance(c.model, str) and c.model.startswith("timm:") and len(c.model) > 5)
    ):
        raise ValueError(
            f"Expected `model` to be one of {', '.join(MODELS)} or timm:<name>; got {c.model!r}."
        )
    _choice("optimizer", c.optimizer, OPTIMIZERS)
    _choice("schedule", c.schedule, SCHEDULES)
    _choice("device", c.device, DEVICES)
    _choice("noise", c.noise, NOISES)
    _choice("backend", c.backend, BACKENDS)
    for s in c.signals:
        _choice("signals", s, SIGNALS)
    if len(set(c.signals)) != len(c.signals):
        raise ValueError(f"Expected distinct `signals`; got {list(c.signals)}.")
    _int_at_least("epochs", c.epochs, 1)
    _int_at_least("batch_size", c.batch_size, 1)
    _int_at_least("seed", c.seed, 0)
    if (
        c.seed > MAX_SEED
    ):  # numpy's legacy seeding (scikit-learn's splits) and torch refuse larger seeds mid-run
        raise ValueError(f"Expected `seed` in [0, {MAX_SEED}] (2**32 - 1); got {c.seed!r}.")
    _int_at_least("warmup_epochs", c.warmup_epochs, 0)
    _int_at_least("width", c.width, 1)
    _int_at_least("num_train", c.num_train, 2, optional=True)
    _int_at_least("mnist1d_samples", c.mnist1d_samples, 20)
    _int_at_least("early_stop", c.early_stop, 1, optional=True)
    _int_at_least("threads", c.threads, 1, optional=True)
    _number_in("init_perturb", c.init_perturb, 0.0, 1.0, high_open=True)
    if c.backend != "torch" and (c.augment or c.init_perturb or c.threads):
        raise ValueError(
            f"`augment`, `init_perturb` and `threads` need backend 'torch'; got backend={c.backend!r}."
        )
    _check_classes(c)
    if not c.hidden or any(h < 1 for h in c.hidden):
        raise ValueError(f"Expected `hidden` to be one or more widths >= 1; got {c.hidden!r}.")
    if c.warmup_epochs >= c.epochs and c.schedule == "warmup_cosine":
        raise ValueError(f"Expected `warmup_epochs` < epochs = {c.epochs}; got {c.warmup_epochs}.")
    if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0):
        raise ValueError(f"Expected `lr` to be a positive number; got {c.lr!r}.")
    _number_in("momentum", c.momentum, 0.0, 1.0, high_open=True)
    _number_in("weight_decay", c.weight_decay, 0.0, math.inf, high_open=True)
    _number_in("val_frac", c.val_frac, 0.0, 0.5, high_open=True)
    _number_in("veto_frac", c.veto_frac, 0.0, 0.5, high_open=True)
    _number_in("noise_rate", c.noise_rate, 0.0, 1.0, high_open=True)
    if c.noise in ("symmetric", "asymmetric", "instance") and c.noise_rate == 0:
        raise ValueError(f"Expected `noise_rate` > 0 with noise={c.noise!r}; got 0.")
    if c.noise in ("none", "file") and c.noise_rate != 0:
        raise ValueError(
            f"`noise_rate` applies to symmetric/asymmetric noise only; got noise_rate={c.noise_rate} "
            f"with noise={c.noise!r}."
        )
    if (c.noise == "file") != (c.noise_file is not None):
        raise ValueError(
            f"Expected `noise_file` exactly when noise='file'; got noise={c.noise!r}, "
            f"noise_file={c.noise_file!r}."
        )
    if c.download and c.dataset != "cifar10" and not c.pretrained:
        raise ValueError(
            f"`download` is supported for dataset 'cifar10' and timm's pretrained weights only; got "
            f"dataset={c.dataset!r} without --pretrained."
        )
    if c.dataset == "imagefolder" and not c.data_dir:
        raise ValueError(
            "dataset 'imagefolder' needs `data_dir` (--data-dir) with train/ and test/ subfolders."
        )
    if c.resume and c.overwrite:
        raise ValueError("Expected at most one of `resume` and `overwrite`; got both.")
    if c.pretrained and not c.model.startswith("timm:"):
        raise ValueError(
            f"`pretrained` needs a timm:<name> model; got model={c.model!r} (use --init-checkpoint "
            f"for a local state_dict)."
        )
    for name, path in c.eval_sets.items():
        if not name or not name.replace("-", "_").isidentifier():
            raise ValueError(f"Expected eval-set names made of letters, digits, _ or -; got {name!r}.")
        if not str(path).endswith(".npz"):
            raise ValueError(f"Expected eval set {name!r} to be an .npz file with arrays x, y; got {path!r}.")
