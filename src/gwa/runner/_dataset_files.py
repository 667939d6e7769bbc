"""Datasets read from files the user points to (``--data-dir``, ``--eval-set``), each checked where it is read.

Fashion-MNIST from its IDX files, CIFAR-10 from torchvision's pickled batches (a restricted unpickler), a folder of
images per class, and extra test sets from an ``.npz``. Pixels and class ids go through :mod:`gwa.runner.inputs`.
"""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np

from gwa.runner import inputs
from gwa.runner._dataset import Dataset
from gwa.runner.safe_pickle import load_array_pickle

log = logging.getLogger("gwa.runner.data")  # the name the CLI's log lines have always shown

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
