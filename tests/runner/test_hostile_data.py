"""The hostile-input suite, data part (issue 20): what enters ``gwa train`` from files and options is checked where
it is read. Each case asserts the clear error (naming the file or option) or the correct result."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from gwa.runner import data, noise
from gwa.runner.config import RunConfig

refused = pytest.mark.hostile("refused")
accepted = pytest.mark.hostile("accepted")


# ---------------------------------------------------------------------------------------------- imagefolder
def _folder(root, images: dict[tuple[str, str], list[np.ndarray]]):
    from PIL import Image

    for (split, cls), arrays in images.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / split / cls / f"{i}.png")


@accepted
def test_imagefolder_keeps_the_range_of_16_bit_greyscale_images(tmp_path):
    from PIL import Image

    dark = np.full((4, 4), 1000, np.uint16)
    bright = np.full((4, 4), 60000, np.uint16)
    assert Image.fromarray(dark).mode.startswith("I;16")
    _folder(
        tmp_path,
        {("train", "a"): [dark], ("train", "b"): [bright], ("test", "a"): [dark], ("test", "b"): [bright]},
    )
    ds = data.load_imagefolder(tmp_path)
    np.testing.assert_allclose(ds.x_train[:, 0, 0, 0], [1000 / 65535, 60000 / 65535], rtol=1e-6)
    assert ds.x_train.shape == (2, 4, 4, 1)  # not white, not RGB


@accepted
def test_imagefolder_scales_8_and_16_bit_images_in_one_set_each_by_its_own_range(tmp_path):
    _folder(
        tmp_path,
        {
            ("train", "a"): [np.full((3, 3), 51, np.uint8)],
            ("train", "b"): [np.full((3, 3), 13107, np.uint16)],
            ("test", "a"): [np.zeros((3, 3, 3), np.uint8)],
            ("test", "b"): [np.full((3, 3), 65535, np.uint16)],
        },
    )
    ds = data.load_imagefolder(tmp_path)
    np.testing.assert_allclose(
        ds.x_train[:, 0, 0, :], [[0.2] * 3, [0.2] * 3], rtol=1e-6
    )  # RGB: grey repeated
    np.testing.assert_allclose(ds.x_test[1], 1.0)


@accepted
def test_imagefolder_skips_hidden_folders_and_files(tmp_path, caplog):
    img = np.zeros((3, 3), np.uint8)
    _folder(tmp_path, {(s, c): [img] for s in ("train", "test") for c in ("cat", "dog")})
    _folder(tmp_path, {("train", ".ipynb_checkpoints"): [img], ("test", ".ipynb_checkpoints"): [img]})
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")
    with caplog.at_level("WARNING", logger="gwa.runner.data"):
        ds = data.load_imagefolder(tmp_path)
    assert ds.classes == ("cat", "dog") and ds.y_train.tolist() == [0, 1] and ds.y_test.tolist() == [0, 1]
    # Said once per split, under the logger name the CLI's lines have always shown.
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("gwa.runner.data", f"{tmp_path / split}: skipping hidden folder(s) .ipynb_checkpoints")
        for split in ("train", "test")
    ]


@refused
def test_imagefolder_names_the_file_it_cannot_read(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    _folder(tmp_path, {(s, c): [img] for s in ("train", "test") for c in ("cat", "dog")})
    whole = (tmp_path / "train" / "dog" / "0.png").read_bytes()
    (tmp_path / "train" / "dog" / "0.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"Cannot read image .*train/dog/0.png"):
        data.load_imagefolder(tmp_path)


@refused
def test_imagefolder_refuses_float_images_it_has_no_range_for(tmp_path):
    from PIL import Image

    img = np.zeros((3, 3), np.uint8)
    _folder(tmp_path, {(s, c): [img] for s in ("train", "test") for c in ("cat", "dog")})
    Image.fromarray(np.full((3, 3), 0.5, np.float32)).save(tmp_path / "train" / "cat" / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif to be an 8- or 16-bit image; got PIL mode F"):
        data.load_imagefolder(tmp_path)


# ---------------------------------------------------------------------------------------------- eval sets
def _eval(tmp_path, x, y):
    np.savez(tmp_path / "e.npz", x=x, y=y)
    return tmp_path / "e.npz"


@refused
@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.arange(1, 11), r"y of eval set 'e' .* class ids in \[0, 9\]; got range \[1, 10\]"),  # 1-based
        (
            np.arange(10) + 0.9,
            r"y of eval set 'e' .* integer class ids of shape \(N,\); got shape \(10,\), dtype float64",
        ),
        (np.arange(10) - 1, r"class ids in \[0, 9\]; got range \[-1, 8\]"),
    ],
)
def test_eval_set_labels_are_checked_like_the_training_labels(tmp_path, y, message):
    path = _eval(tmp_path, np.zeros((10, 8, 8), np.uint8), y)
    with pytest.raises(ValueError, match=message):
        data.load_eval_set("e", path, (8, 8, 1), 10)


@accepted
def test_eval_set_uint16_images_are_scaled_by_their_range(tmp_path):
    path = _eval(tmp_path, np.full((2, 8, 8), 32768, np.uint16), np.array([0, 9]))
    x, y = data.load_eval_set("e", path, (8, 8, 1), 10)
    np.testing.assert_allclose(x, 32768 / 65535, rtol=1e-6)
    assert x.dtype == np.float32 and y.dtype == np.int64


@refused
@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            np.zeros((2, 8, 8), np.int32),
            r"x of eval set 'e' .* uint8 .*uint16 .*float values; got dtype int32",
        ),
        (np.full((2, 8, 8), np.nan), r"x of eval set 'e' .* finite values"),
    ],
)
def test_eval_set_images_of_unknown_range_are_refused(tmp_path, x, message):
    with pytest.raises(ValueError, match=message):
        data.load_eval_set("e", _eval(tmp_path, x, np.array([0, 1])), (8, 8, 1), 10)


@refused
def test_prepare_checks_eval_labels_against_the_dataset_classes(tmp_path):
    path = _eval(tmp_path, np.zeros((3, 8, 8), np.uint8), np.array([0, 5, 10]))
    with pytest.raises(ValueError, match=r"class ids in \[0, 9\]; got range \[0, 10\]"):
        data.prepare(RunConfig(eval_sets={"e": str(path)}))


# ---------------------------------------------------------------------------------------------- CIFAR and IDX
def _cifar(tmp_path, *, labels=None, pixels=None):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [0, 9]}
        if name == "data_batch_2":
            batch["labels"] = batch["labels"] if labels is None else labels
            batch["data"] = batch["data"] if pixels is None else pixels
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


@refused
@pytest.mark.parametrize(("labels", "got"), [([0, 10], r"\[0, 10\]"), ([-1, 3], r"\[-1, 3\]")])
def test_cifar_labels_out_of_range_are_refused_at_load_naming_the_batch(tmp_path, labels, got):
    _cifar(tmp_path, labels=labels)
    with pytest.raises(
        ValueError, match=rf"'labels' in .*data_batch_2 to be class ids in \[0, 9\]; got range {got}"
    ):
        data.load_cifar10(tmp_path)


@refused
@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (
            np.full((2, 3072), 300.0),
            r"'data' in .*data_batch_2 to hold uint8 pixel values .*got dtype float64",
        ),
        (
            np.full((2, 3072), 300, np.int64),
            r"'data' in .*data_batch_2 to hold pixel values in 0..255; got range",
        ),
        (np.zeros((2, 100), np.uint8), r"'data' in .*data_batch_2 to hold 2 images of 3x32x32 bytes"),
    ],
)
def test_cifar_pixels_that_are_not_bytes_are_refused_not_wrapped(tmp_path, pixels, message):
    _cifar(tmp_path, pixels=pixels)
    with pytest.raises(ValueError, match=message):
        data.load_cifar10(tmp_path)


def _idx(path, array, dtype_code, fmt):
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(fmt).tobytes())


def _fashion(folder, *, labels=None, images=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 28, 28)), 0x08, ">u1")
    _idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (2, 28, 28)), 0x08, ">u1")
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1]), 0x08, ">u1")
    _idx(folder / "train-labels-idx1-ubyte.gz", np.arange(4) if labels is None else labels, 0x08, ">u1")
    if images is not None:
        _idx(folder / "train-images-idx3-ubyte.gz", images, 0x0D, ">f4")


@refused
def test_idx_labels_out_of_range_are_refused_at_load(tmp_path):
    _fashion(tmp_path / "fm", labels=np.array([0, 1, 2, 12]))
    with pytest.raises(
        ValueError,
        match=r"labels in .*train-labels-idx1-ubyte.gz to be class ids in \[0, 9\]; got range \[0, 12\]",
    ):
        data.load_fashion_mnist(tmp_path / "fm")


@refused
def test_idx_float_images_are_refused(tmp_path):
    _fashion(tmp_path / "fm", images=np.full((4, 28, 28), 300.0))
    with pytest.raises(
        ValueError, match=r"images in .*train-images-idx3-ubyte.gz to hold uint8 pixel values"
    ):
        data.load_fashion_mnist(tmp_path / "fm")


# ---------------------------------------------------------------------------------------------- seed
@refused
@pytest.mark.parametrize("seed", [2**64, 2**32, -1])
def test_seeds_outside_what_numpy_and_torch_accept_are_refused_up_front(seed):
    with pytest.raises(ValueError, match=r"Expected `seed`"):
        RunConfig(seed=seed)


@accepted
def test_the_largest_seed_prepares_the_data():
    p = data.prepare(
        RunConfig(seed=2**32 - 1, num_train=100, noise="symmetric", noise_rate=0.2, val_frac=0.1)
    )
    assert p.num_samples == 90 and 0 < p.noise_mask.sum() <= 20  # subset, noise and split all seeded


# ---------------------------------------------------------------------------------------------- noise files
@refused
@pytest.mark.parametrize("value", [-1, 10])
def test_noise_file_labels_out_of_range_name_the_option(tmp_path, value):
    np.save(tmp_path / "n.npy", np.array([0, 1, value]))
    with pytest.raises(
        ValueError,
        match=r"labels in n.npy \(--noise-file\) to be class ids (in \[0, 9\]|>= 0 \(and < 2\*\*63\)); got range",
    ):
        noise.from_file(np.array([0, 1, 2]), tmp_path / "n.npy", 10)


@refused
def test_noise_file_uint64_labels_are_refused_as_themselves(tmp_path):
    np.save(tmp_path / "n.npy", np.array([0, 2**64 - 1], np.uint64))
    with pytest.raises(ValueError, match=r"got range \[0, 18446744073709551615\]"):
        noise.load_label_file(tmp_path / "n.npy")


@refused
def test_a_noise_key_for_a_file_without_keys_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.tensor([0, 1, 2]), tmp_path / "bare.pt")
    with pytest.raises(
        ValueError, match=r"bare.pt holds one label array, not a dict .*--noise-key 'worse_label'"
    ):
        noise.load_label_file(tmp_path / "bare.pt", key="worse_label")
    np.save(tmp_path / "n.npy", np.array([0, 1]))
    with pytest.raises(ValueError, match=r"n.npy is one .npy label array; got --noise-key 'x'"):
        noise.load_label_file(tmp_path / "n.npy", key="x")


@accepted
def test_a_pt_file_with_one_label_set_needs_no_key(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"worse_label": np.array([2, 1, 0])}, tmp_path / "one.pt")
    assert noise.load_label_file(tmp_path / "one.pt").tolist() == [2, 1, 0]
    torch.save({"a": np.array([0]), "b": np.array([1])}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"two.pt holds 2 label sets; choose one with --noise-key \(a, b\)"):
        noise.load_label_file(tmp_path / "two.pt")
