"""Datasets as numpy arrays, and the prepared data one run trains on (subset, label noise, validation split).

Inputs are float32: images channels-last ``(N, H, W, C)`` in [0, 1] before normalisation, 1-D signals ``(N, L)``.
Labels are int64 class ids. Nothing is downloaded unless the user asks (``--download``, CIFAR-10 only).
"""

from __future__ import annotations

import gzip
import logging
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gwa.runner import inputs
from gwa.runner import noise as noise_lib
from gwa.runner.safe_pickle import load_array_pickle

log = logging.getLogger(__name__)

#: The train/test split of embedded datasets (digits) is fixed, so runs with different seeds share a test set.
SPLIT_SEED = 0
#: Where Debian's ``dataset-fashion-mnist`` package (first) and common manual installs put the IDX files.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist", "~/.cache/fashion-mnist", "~/data/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Dataset:
    """A dataset's train and test arrays (un-normalised)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------------------------------------- loaders


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with sklearn), 70/30 stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=SPLIT_SEED)
    return Dataset("digits", xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


def load_mnist1d(num_samples: int = 5000) -> Dataset:
    """MNIST-1D from its generator (never its download), with the package's default arguments and seed."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    # The generator seeds numpy's and Python's global RNGs; keep the caller's streams untouched.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 - the global stream itself
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return Dataset(
        "mnist1d",
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
        tuple(str(i) for i in range(10)),
    )


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (MNIST's format), gzipped or not: magic ``0 0 <dtype> <ndim>``, big-endian dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: dims {dims} need {expected} bytes, found {len(body)}."
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


def default_fashion_mnist_dir() -> Path | None:
    for d in FASHION_MNIST_DIRS:
        p = Path(d).expanduser()
        if _find_file(p, "train-images-idx3-ubyte"):
            return p
    return None


def load_fashion_mnist(data_dir=None) -> Dataset:
    """Fashion-MNIST from the official IDX files (``train-images-idx3-ubyte.gz`` ...) in ``data_dir``."""
    folder = Path(data_dir).expanduser() if data_dir else default_fashion_mnist_dir()
    hint = (
        "pass --data-dir DIR holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (on Debian/Ubuntu: "
        "apt install dataset-fashion-mnist)"
    )
    if folder is None:
        raise FileNotFoundError(f"Fashion-MNIST not found in {', '.join(FASHION_MNIST_DIRS)}; {hint}.")
    arrays = {}
    for key, stem in (
        ("x_train", "train-images-idx3-ubyte"),
        ("y_train", "train-labels-idx1-ubyte"),
        ("x_test", "t10k-images-idx3-ubyte"),
        ("y_test", "t10k-labels-idx1-ubyte"),
    ):
        f = _find_file(folder, stem)
        if f is None:
            raise FileNotFoundError(f"{folder} has no {stem}.gz; {hint}.")
        raw = read_idx(f)
        arrays[key] = (
            inputs.class_ids(raw, len(FASHION_MNIST_CLASSES), f"the labels in {f}")
            if key.startswith("y")
            else inputs.uint8_pixels(raw, f"the images in {f}")
        )
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} files in {folder} disagree: images {x.shape}, labels {y.shape}."
            )
    return Dataset(
        "fashion-mnist",
        (arrays["x_train"] / 255.0).astype(np.float32)[..., None],
        arrays["y_train"],
        (arrays["x_test"] / 255.0).astype(np.float32)[..., None],
        arrays["y_test"],
        FASHION_MNIST_CLASSES,
    )


def load_cifar10(data_dir=None, *, download: bool = False) -> Dataset:
    """CIFAR-10 in torchvision's layout (``DIR/cifar-10-batches-py``); downloaded only with ``download=True``."""
    if not data_dir:
        raise FileNotFoundError(
            "dataset 'cifar10' needs --data-dir DIR (holding cifar-10-batches-py; add "
            "--download to fetch it there)."
        )
    root = Path(data_dir).expanduser()
    folder = root / "cifar-10-batches-py"
    if not folder.exists() and download:
        import torchvision

        torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
    if not folder.exists():
        raise FileNotFoundError(
            f"{folder} does not exist; point --data-dir at the folder holding "
            f"cifar-10-batches-py, or add --download to fetch it."
        )

    def batch(name):
        d = load_array_pickle(folder / name)  # numpy arrays and plain data only: no code from the files
        if not isinstance(d, dict) or "data" not in d or "labels" not in d:
            raise ValueError(
                f"Expected {folder / name} to hold a CIFAR-10 batch (a dict with 'data' and "
                f"'labels'); got {type(d).__name__}"
                f"{' with keys ' + ', '.join(map(str, d)) if isinstance(d, dict) else ''}."
            )
        # Checked here, naming the file: not as a traceback mid-epoch, and float pixels are not wrapped to bytes.
        x = inputs.uint8_pixels(d["data"], f"'data' in {folder / name}")
        y = inputs.class_ids(d["labels"], len(CIFAR10_CLASSES), f"'labels' in {folder / name}")
        if x.size != len(y) * 3 * 32 * 32:
            raise ValueError(
                f"Expected 'data' in {folder / name} to hold {len(y)} images of 3x32x32 bytes (one per label); "
                f"got shape {x.shape}."
            )
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return Dataset(
        "cifar10",
        (x_train / np.float32(255)).astype(np.float32),
        y_train,
        (x_test / np.float32(255)).astype(np.float32),
        y_test,
        CIFAR10_CLASSES,
    )


def _read_image_split(folder: Path, classes: list[str] | None):
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist; --data-dir for 'imagefolder' needs train/ and test/ "
            f"subfolders with one folder of images per class."
        )
    folders, hidden = inputs.visible(p for p in folder.iterdir() if p.is_dir())
    if hidden:  # .ipynb_checkpoints would become class 0 and shift every label
        log.warning("%s: skipping hidden folder(s) %s", folder, ", ".join(sorted(p.name for p in hidden)))
    found = sorted(p.name for p in folders)
    classes = classes or found
    if not classes:
        raise FileNotFoundError(f"{folder} has no class subfolders.")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder} has classes {unknown} that train/ does not have.")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files, _ = inputs.visible(sorted((folder / cls).glob("*")) if (folder / cls).is_dir() else [])
        for f in files:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(inputs.read_image(f))
                labels.append(label)
    if not images:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return images, np.asarray(labels, dtype=np.int64), classes


def load_imagefolder(data_dir) -> Dataset:
    """Images in ``DIR/{train,test}/<class>/*.png``; all of one size; grey if every image is grey, else RGB.

    8-bit images are scaled by 255, 16-bit greyscale ones by 65535; hidden folders and files are skipped.
    """
    root = Path(data_dir).expanduser()
    train, y_train, classes = _read_image_split(root / "train", None)
    test, y_test, _ = _read_image_split(root / "test", classes)
    images = train + test
    sizes = {im.shape[:2] for im in images}
    if len(sizes) != 1:
        raise ValueError(
            f"Expected all images in {root} to have one size; got sizes {sorted(sizes)[:5]} "
            f"(resize them first)."
        )
    rgb = any(im.ndim == 3 for im in images)
    (size,) = sizes

    def stack(ims):
        x = np.empty((len(ims), *size, 3 if rgb else 1), dtype=np.float32)
        for i, im in enumerate(ims):  # each by its own full scale: 8- and 16-bit images may be mixed
            x[i] = (im if im.ndim == 3 else im[..., None]) / np.float32(np.iinfo(im.dtype).max)
        return x

    return Dataset("imagefolder", stack(train), y_train, stack(test), y_test, tuple(classes))


def load_dataset(name: str, *, data_dir=None, download: bool = False, mnist1d_samples: int = 5000) -> Dataset:
    if name == "digits":
        return load_digits()
    if name == "mnist1d":
        return load_mnist1d(mnist1d_samples)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir, download=download)
    if name == "imagefolder":
        return load_imagefolder(data_dir)
    raise ValueError(
        f"Expected `dataset` to be one of digits, mnist1d, fashion-mnist, cifar10, imagefolder; got {name!r}."
    )


def load_eval_set(
    name: str, path, input_shape: tuple[int, ...], num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An extra test set (e.g. one CIFAR-10-C corruption) from an .npz with ``x`` and ``y``.

    Checked like the training set: ``y`` integer class ids in ``[0, num_classes)`` (1-based or float labels would
    give a silent 0% or truncated accuracy), ``x`` uint8 (/255), uint16 (/65535) or finite floats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Eval set {name!r}: {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as z:  # never a pickle: object arrays are refused
            if "x" not in z or "y" not in z:
                raise ValueError(f"expected arrays 'x' and 'y'; got {list(z.keys())}")
            x, y = z["x"], z["y"]
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"Eval set {name!r}: cannot read {path} as an .npz of numeric arrays x, y: {exc}."
        ) from None
    x = inputs.unit_pixels(x, f"x of eval set {name!r} ({path})")
    if x.shape[1:] != tuple(input_shape) and (*x.shape[1:], 1) == tuple(input_shape):
        x = x[..., None]
    if x.shape[1:] != tuple(input_shape) or y.shape != (len(x),):
        raise ValueError(
            f"Eval set {name!r}: expected x of shape (M, {', '.join(map(str, input_shape))}) and y "
            f"(M,); got x {x.shape}, y {y.shape}."
        )
    return x, inputs.class_ids(y, num_classes, f"y of eval set {name!r} ({path})")


# ---------------------------------------------------------------------------------------------- one run's data


@dataclass
class PreparedData:
    """What a backend trains on. Inputs are normalised; ``raw(x)`` undoes it (for previews).

    Sample ids are the row indices of ``x_train`` (0..N-1); ``source_index[i]`` is sample i's row in the
    dataset's original training set.
    """

    x_train: np.ndarray
    y_train: np.ndarray  # labels used for training (noisy)
    y_train_clean: np.ndarray
    noise_mask: np.ndarray
    source_index: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None  # noisy, like training
    y_val_clean: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    noise_pairs: dict[int, int] | None = None  # asymmetric noise: the flips used (source -> target class id)

    @property
    def realised_noise_rate(self) -> float:
        """The share of training labels the noise changed (asymmetric 0.3 flips 30% of the paired classes only)."""
        return noise_lib.realised_rate(self.noise_mask)

    # The veto split (--veto-frac): noisy labels like training; its accuracy only chooses among gwa's candidates.
    x_veto: np.ndarray | None = None
    y_veto: np.ndarray | None = None
    y_veto_clean: np.ndarray | None = None
    source_size: int | None = None  # rows of the source training set (what source_index indexes)

    @property
    def num_samples(self) -> int:
        return len(self.y_train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4

    def raw(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


def _stratified_pick(labels: np.ndarray, size, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``arange(len(labels))`` into (kept, picked) with ``picked`` of ``size``, stratified; both sorted."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        kept, picked = train_test_split(idx, test_size=size, stratify=labels, random_state=seed)
    except ValueError as exc:  # a class too small to stratify
        raise ValueError(
            f"Cannot draw a stratified {what} of {size} from {len(labels)} samples: {exc}"
        ) from None
    return np.sort(kept), np.sort(picked)


def _class_map(classes, num_classes: int, dataset: str) -> np.ndarray | None:
    """Original class id -> new id (0..k-1 in the order given), -1 for a dropped class; None = keep all."""
    if classes is None:
        return None
    out_of_range = [k for k in classes if k >= num_classes]
    if out_of_range:
        raise ValueError(
            f"Expected `classes` to be class ids in [0, {num_classes - 1}] ({dataset} has {num_classes} "
            f"classes); got {list(classes)}."
        )
    relabel = np.full(num_classes, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return relabel


def _kept_rows(y: np.ndarray, relabel: np.ndarray) -> np.ndarray:
    keep = (y >= 0) & (y < relabel.size)
    keep[keep] = relabel[y[keep]] >= 0
    return np.flatnonzero(keep)


def _relabelled(x: np.ndarray, y: np.ndarray, relabel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = _kept_rows(y, relabel)
    return x[rows], relabel[y[rows]]


def _keep_classes(ds: Dataset, relabel: np.ndarray, classes) -> tuple[Dataset, np.ndarray]:
    """The dataset restricted to ``classes`` (train and test, relabelled) and the original rows of its
    training samples."""
    rows = _kept_rows(ds.y_train, relabel)
    x_test, y_test = _relabelled(ds.x_test, ds.y_test, relabel)
    names = tuple(ds.classes[k] for k in classes)
    return Dataset(ds.name, ds.x_train[rows], relabel[ds.y_train[rows]], x_test, y_test, names), rows


def _pairs_within(pairs: dict[int, int], relabel: np.ndarray, classes) -> dict[int, int]:
    """The asymmetric flips whose source and target both lie in ``classes``, in the new class ids."""
    kept = {int(relabel[s]): int(relabel[t]) for s, t in pairs.items() if relabel[s] >= 0 and relabel[t] >= 0}
    if not kept:
        raise ValueError(
            f"Asymmetric noise needs a class pair inside `classes`; got classes={list(classes)} and the pairs "
            f"{pairs} (source: target)."
        )
    return kept


def prepare(config) -> PreparedData:
    """Load ``config.dataset``, take the subset, inject label noise, hold out validation, normalise."""
    ds = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        mnist1d_samples=config.mnist1d_samples,
    )
    relabel = _class_map(config.classes, len(ds.classes), ds.name)
    original_rows = np.arange(len(ds.y_train))
    source_size = len(ds.y_train)
    if relabel is not None:
        ds, original_rows = _keep_classes(ds, relabel, config.classes)
    n_classes = len(ds.classes)
    index = np.arange(len(ds.y_train))
    if config.num_train is not None:
        if config.num_train > len(index):
            raise ValueError(
                f"Expected `num_train` <= {len(index)} (the size of {ds.name}'s training set"
                f"{'' if relabel is None else ' in `classes`'}); got {config.num_train}."
            )
        if config.num_train < len(index):
            _, index = _stratified_pick(ds.y_train, config.num_train, config.seed, "training subset")
    clean = ds.y_train[index]
    pairs: dict[int, int] | None = None
    if config.noise == "symmetric":
        noisy, mask = noise_lib.symmetric(clean, config.noise_rate, n_classes, seed=config.seed)
    elif config.noise == "asymmetric":
        pairs = noise_lib.pairs_for(config.dataset)
        if relabel is not None:
            pairs = _pairs_within(pairs, relabel, config.classes)
        noisy, mask = noise_lib.asymmetric(clean, config.noise_rate, pairs, seed=config.seed)
    elif config.noise == "instance":
        probs = noise_lib.reference_probabilities(ds.x_train[index], clean, n_classes, seed=config.seed)
        noisy, mask = noise_lib.instance_dependent(clean, config.noise_rate, probs, seed=config.seed)
    elif config.noise == "file":
        noisy, mask = noise_lib.from_file(
            clean, config.noise_file, n_classes, key=config.noise_key, index=index
        )
    else:
        noisy, mask = clean.copy(), np.zeros(clean.shape, dtype=bool)
    x = ds.x_train[index]
    n_before_splits = len(index)
    x_val = y_val = y_val_clean = None
    if config.val_frac > 0:
        train_rows, val_rows = _stratified_pick(noisy, config.val_frac, config.seed, "validation split")
        x_val, y_val, y_val_clean = x[val_rows], noisy[val_rows], clean[val_rows]
        x, noisy, clean, mask, index = (a[train_rows] for a in (x, noisy, clean, mask, index))
    x_veto = y_veto = y_veto_clean = None
    if config.veto_frac > 0:  # a fraction of the whole training set, drawn after the validation split
        size = round(config.veto_frac * n_before_splits)
        train_rows, veto_rows = _stratified_pick(noisy, size, config.seed + 1, "veto split (--veto-frac)")
        x_veto, y_veto, y_veto_clean = x[veto_rows], noisy[veto_rows], clean[veto_rows]
        x, noisy, clean, mask, index = (a[train_rows] for a in (x, noisy, clean, mask, index))
    # Normalise with the training inputs' statistics: per channel for images, one scalar for 1-D signals.
    axes = tuple(range(x.ndim - 1)) if x.ndim == 4 else tuple(range(x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64).astype(np.float32)
    std = np.maximum(x.std(axis=axes, dtype=np.float64), 1e-6).astype(np.float32)

    def norm(a):
        return None if a is None else ((a - mean) / std).astype(np.float32)

    eval_sets = {
        name: load_eval_set(name, path, ds.input_shape, len(ds.classes) if relabel is None else relabel.size)
        for name, path in config.eval_sets.items()
    }
    if relabel is not None:
        eval_sets = {name: _relabelled(xe, ye, relabel) for name, (xe, ye) in eval_sets.items()}
    return PreparedData(
        x_train=norm(x),
        y_train=noisy,
        y_train_clean=clean,
        noise_mask=mask,
        noise_pairs=pairs,
        source_index=original_rows[index],
        x_val=norm(x_val),
        y_val=y_val,
        y_val_clean=y_val_clean,
        x_test=norm(ds.x_test),
        y_test=ds.y_test,
        classes=ds.classes,
        mean=mean,
        std=std,
        eval_sets={k: (norm(xe), ye) for k, (xe, ye) in eval_sets.items()},
        x_veto=norm(x_veto),
        y_veto=y_veto,
        y_veto_clean=y_veto_clean,
        source_size=source_size,
    )
