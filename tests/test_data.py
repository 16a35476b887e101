"""scorepde.data: each file format written small in tmp_path and read back exactly; scaling."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scorepde.data import (
    SCALINGS,
    ImageData,
    dequantize,
    from_model_space,
    load_dataset,
    read_idx,
    to_model_space,
    to_unit,
)

SHARED = Path(__file__).parents[2] / "shared" / "data"


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(raw)


def _idx_files(root: Path, prefix: str, n: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    _write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, 0x803)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, 0x801)
    return images, labels


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, name, gz):
    train = _idx_files(tmp_path, "train", 5, gz, seed=1)
    test = _idx_files(tmp_path, "t10k", 3, gz, seed=2)
    for split, (images, labels) in [("train", train), ("test", test)]:
        data = load_dataset(name, split, tmp_path)
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(labels), 1, 28, 28)
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
        assert data.levels == 256 and data.name == name


def test_idx_bad_magic_and_truncation(tmp_path):
    _write_idx(tmp_path / "x.gz", np.zeros((2, 3, 3), np.uint8), 0x801)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "x.gz", 3)
    raw = struct.pack(">4I", 0x803, 5, 3, 3) + bytes(10)
    (tmp_path / "y").write_bytes(raw)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "y", 3)


def test_idx_images_and_labels_must_agree(tmp_path):
    images, _ = _idx_files(tmp_path, "t10k", 4, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8), 0x801)
    with pytest.raises(ValueError, match="4 images but"):
        load_dataset("mnist", "test", tmp_path)


def _cifar_batch(path: Path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:  # bytes keys, protocol 2: as the Python 2 originals
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, f, protocol=2)
    return data, labels


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_roundtrip(tmp_path, nested):
    root = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    root.mkdir(exist_ok=True)
    train = [_cifar_batch(root / f"data_batch_{i}", 2, i) for i in range(1, 6)]
    test = _cifar_batch(root / "test_batch", 3, 9)
    data = load_dataset("cifar10", "train", tmp_path)
    assert data.images.shape == (10, 3, 32, 32) and data.levels == 256
    expected = np.concatenate([d for d, _ in train]).reshape(10, 3, 32, 32)
    assert torch.equal(data.images, torch.from_numpy(expected))
    assert data.labels.tolist() == sum((lab for _, lab in train), [])
    data = load_dataset("cifar10", "test", tmp_path)
    # Channel-first layout: the first 1024 bytes of a row are the red plane.
    assert torch.equal(data.images[1, 0].flatten(), torch.from_numpy(test[0][1, :1024]))
    assert torch.equal(data.images[1, 2].flatten(), torch.from_numpy(test[0][1, 2048:]))
    assert data.labels.tolist() == test[1]


def test_imagenet32_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    labels = rng.integers(1, 1001, 4)
    np.savez(tmp_path / "val_data.npz", data=data, labels=labels)
    out = load_dataset("imagenet32", "test", tmp_path)
    assert torch.equal(out.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert torch.equal(out.labels, torch.from_numpy(labels - 1))  # 1-based on disk
    for i in range(1, 11):
        np.savez(
            tmp_path / f"train_data_batch_{i}.npz",
            data=data[:1],
            labels=labels[:1].tolist(),
            mean=np.zeros(3072),
        )
    out = load_dataset("imagenet32", "train", tmp_path)
    assert out.images.shape == (10, 3, 32, 32) and out.labels.tolist() == [labels[0] - 1] * 10


@pytest.mark.parametrize(
    "name, split, files",
    [
        ("mnist", "train", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]),
        ("fashion-mnist", "test", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
        ("cifar10", "train", ["data_batch_1", "data_batch_5"]),
        ("cifar10", "test", ["test_batch", "cifar-10-batches-py"]),
        ("imagenet32", "train", ["train_data_batch_1.npz", "train_data_batch_10.npz"]),
        ("imagenet32", "test", ["val_data.npz"]),
    ],
)
def test_missing_files_are_named(tmp_path, name, split, files):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, split, tmp_path)
    assert str(tmp_path) in str(err.value)
    for f in files:
        assert f in str(err.value)
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset(name, split)


def test_partial_files_name_the_missing_one(tmp_path):
    _idx_files(tmp_path, "train", 2, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing: train-labels-idx1-ubyte or"):
        load_dataset("mnist", "train", tmp_path)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")


def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.levels == 17 and train.shape == (1, 8, 8) and int(train.images.max()) == 16
    assert (len(train), len(test)) == (1438, 359)
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    from sklearn.datasets import load_digits

    rows = {tuple(r) for r in train.images.flatten(1).tolist()}
    overlap = sum(tuple(r) in rows for r in test.images.flatten(1).tolist())
    # Disjoint as index sets; sklearn's digits hold a few duplicate images, so count those.
    dup = len(load_digits().images) - len({tuple(r) for r in load_digits().data.astype(int).tolist()})
    assert overlap <= dup
    loader = torch.utils.data.DataLoader(train.dataset(), batch_size=7)
    images, labels = next(iter(loader))
    assert images.shape == (7, 1, 8, 8) and labels.shape == (7,)


def test_scaling_convention():
    k = torch.arange(17, dtype=torch.uint8).reshape(1, 1, 1, 17)
    g = torch.Generator().manual_seed(0)
    u = dequantize(k, 17, g, dtype=torch.float64)
    assert bool((u >= 0).all() and (u < 1).all())
    assert torch.equal(torch.floor(u * 17).to(torch.uint8), k)  # each u stays in its own bin
    assert torch.allclose(to_unit(k, 17, torch.float64), (k.double() + 0.5) / 17)
    for name, (a, b) in SCALINGS.items():
        x, ab = to_model_space(k, 17, name, dtype=torch.float64)
        assert ab == (a, b) and torch.allclose(x, a * to_unit(k, 17, torch.float64) + b)
        xd, _ = to_model_space(
            k, 17, name, dequantized=True, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        assert torch.allclose(xd, a * u + b)
        assert torch.equal(from_model_space(xd, 17, name), k)
    assert SCALINGS["[0,1]"] == (1.0, 0.0) and SCALINGS["[-1,1]"] == (2.0, -1.0)
    x, _ = to_model_space(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), 256, "[-1,1]")
    assert -1 < x.min() and x.max() < 1
    top = dequantize(torch.full((1000,), 255, dtype=torch.uint8), 256)
    assert bool((top < 1).all())  # float32 rounding never reaches 1
    with pytest.raises(ValueError, match="scaling"):
        to_model_space(k, 17, "[0,255]")
    with pytest.raises(ValueError, match="integers"):
        dequantize(k[..., :-1].float() + 0.5, 17)


def test_image_data_validates():
    with pytest.raises(ValueError, match="levels"):
        ImageData(torch.full((1, 1, 2, 2), 17, dtype=torch.uint8), None, 17, "x")
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(1, 1, 2, 2), None, 17, "x")


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared data folder")
def test_real_idx_files():
    mnist = load_dataset("mnist", "test", SHARED / "mnist-10k")
    assert mnist.images.shape == (2000, 1, 28, 28) and mnist.labels.shape == (2000,)
    assert int(mnist.images.max()) == 255 and set(mnist.labels.tolist()) == set(range(10))
    fashion = load_dataset("fashion-mnist", "test", SHARED / "fashion-mnist")
    assert fashion.images.shape == (10000, 1, 28, 28)
    assert fashion.labels.bincount().tolist() == [1000] * 10
