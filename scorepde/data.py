"""Image datasets read from files the user points at (never downloaded), and their scaling.

``load_dataset(name, split, data_dir)`` returns ``ImageData``: uint8 images ``[N, C, H, W]``
holding integer values k ∈ {0, …, levels − 1}, labels ``[N]`` (or None) and ``levels``.

One scaling convention, used by training, sampling and bits/dim alike:

    u = (k + δ) / levels ∈ [0, 1),     x = a·u + b

with δ ~ U[0, 1) for dequantized data (``scorepde.bpd.dequantize``) and δ = ½, the bin centre, for a
deterministic view (``to_unit``). ``SCALINGS`` names (a, b): ``"[0,1]"`` is (1, 0) and
``"[-1,1]"`` is (2, −1). A density p_x on x gives p_u(u) = aᴰ p_x(a·u + b) on the unit cube,
and the discrete data then get bits/dim ≥ −(log p_x(x) + D log a) / (D log 2) + log₂(levels).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bpd import check_discrete, dequantize

__all__ = [
    "ImageData",
    "load_dataset",
    "DATASETS",
    "SCALINGS",
    "scaling_coefficients",
    "to_unit",
    "to_model_space",
    "from_model_space",
    "read_idx",
]

PathLike = Union[str, Path]

#: (a, b) of x = a·u + b for each named model space, u ∈ [0, 1).
SCALINGS: dict[str, tuple[float, float]] = {"[0,1]": (1.0, 0.0), "[-1,1]": (2.0, -1.0)}

#: Seed and test fraction of the fixed train/test split of the sklearn digits.
DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION = 0, 0.2


@dataclass
class ImageData:
    """Integer images ``[N, C, H, W]`` (uint8, values in [0, levels)), labels ``[N]`` or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    levels: int
    name: str

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: images must be a uint8 tensor [N, C, H, W], got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.name}: {self.labels.shape[0]} labels for "
                f"{self.images.shape[0]} images; the files do not belong together"
            )
        if not 2 <= self.levels <= 256:
            raise ValueError(f"{self.name}: levels must be in [2, 256], got {self.levels}")
        if self.images.numel() and int(self.images.max()) >= self.levels:
            raise ValueError(
                f"{self.name}: an image value {int(self.images.max())} is not below "
                f"levels={self.levels}; pass the right number of levels"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def dataset(self) -> TensorDataset:
        """A ``TensorDataset`` of (images,) or (images, labels), ready for a ``DataLoader``."""
        return TensorDataset(*((self.images,) if self.labels is None else (self.images, self.labels)))


# ---------------------------------------------------------------------------------------
# Scaling: u = (k + δ)/levels, x = a·u + b.
# ---------------------------------------------------------------------------------------


def scaling_coefficients(scaling: str) -> tuple[float, float]:
    """(a, b) of x = a·u + b for a name in ``SCALINGS``."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {sorted(SCALINGS)}")
    return SCALINGS[scaling]


def to_unit(images: torch.Tensor, levels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """u = (k + ½) / levels: each integer at the centre of its bin in [0, 1)."""
    check_discrete(images, levels)
    return (images.to(dtype) + 0.5) / levels


def to_model_space(
    images: torch.Tensor,
    levels: int,
    scaling: str = "[0,1]",
    *,
    dequantized: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, tuple[float, float]]:
    """(x, (a, b)) with x = a·u + b, u from ``dequantize`` (if ``dequantized``) or ``to_unit``.

    ``"[0,1]"``: x = u. ``"[-1,1]"``: x = 2u − 1. The pair (a, b) is what a bits/dim
    computation needs (see the module docstring).
    """
    a, b = scaling_coefficients(scaling)
    u = dequantize(images, levels, generator, dtype=dtype) if dequantized else to_unit(images, levels, dtype)
    return a * u + b, (a, b)


def from_model_space(x: torch.Tensor, levels: int, scaling: str = "[0,1]") -> torch.Tensor:
    """The integer images k = clamp(⌊levels·(x − b)/a⌋, 0, levels − 1) as uint8 (e.g. for samples)."""
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in [2, 256], got {levels}")
    a, b = scaling_coefficients(scaling)
    k = torch.floor((x - b) / a * levels).clamp(0, levels - 1)
    return k.to(torch.uint8)


# ---------------------------------------------------------------------------------------
# File readers
# ---------------------------------------------------------------------------------------

_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}


def read_idx(path: PathLike, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped if the name ends in .gz): magic, dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(
            f"{path}: IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
            f"(unsigned bytes, {ndim} dims); is this the right file, and is it unzipped "
            "or named .gz correctly?"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header says dims {dims} ({int(np.prod(dims))} bytes) but "
            f"{data.size} bytes of data follow; the file is truncated or corrupt"
        )
    return data.reshape(dims)


def _find(
    data_dir: PathLike | None, name: str, files: Sequence[Sequence[str]], subdirs: Sequence[str] = ("",)
) -> list[Path]:
    """For each group of alternative file names, the first that exists under data_dir[/subdir]."""
    expected = ", ".join(" or ".join(g) for g in files)
    if data_dir is None:
        raise ValueError(
            f"{name} is read from files and needs a data folder: pass --data-dir "
            f"(data_dir in Python), the folder holding {expected}"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"the data folder {root} does not exist; pass --data-dir (data_dir "
            f"in Python) as the folder holding {name}'s files {expected}"
        )
    # The data set's own folder, or the folder holding it (one convention for every script).
    subdirs = tuple(dict.fromkeys([*subdirs, name]))
    searched = [root / s if s else root for s in subdirs]
    found, missing = [], []
    for group in files:
        hit = next((d / f for d in searched for f in group if (d / f).is_file()), None)
        (found if hit is not None else missing).append(hit if hit is not None else " or ".join(group))
    if missing:
        where = " or ".join(str(d) for d in searched)
        holders = sorted(
            str(d)
            for d in root.iterdir()
            if d.is_dir() and all(any((d / f).is_file() for f in g) for g in files)
        )
        hint = (
            f"; these subfolders hold such files: {', '.join(holders)}: pass the right one as --data-dir"
            if holders
            else ". Download them yourself (scorepde never does) and "
            "pass their folder as --data-dir (data_dir in Python)"
        )
        raise FileNotFoundError(
            f"{name} needs the files {expected} in {where}; missing: {', '.join(missing)}{hint}"
        )
    return found


def _idx_dataset(name: str):
    def load(split: str, data_dir: PathLike | None) -> ImageData:
        prefix = "train" if split == "train" else "t10k"
        groups = [
            (f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"),
            (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"),
        ]
        image_file, label_file = _find(data_dir, name, groups)
        images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{name}: {image_file} has {images.shape[0]} images but {label_file} "
                f"has {labels.shape[0]} labels; the files do not belong together"
            )
        return ImageData(
            torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), 256, name
        )

    return load


def _flat_rgb(data: np.ndarray, path: Path, side: int = 32) -> torch.Tensor:
    """Rows of 3·side² bytes, channel-first (all R, then G, then B) → uint8 ``[N, 3, side, side]``."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side * side:
        raise ValueError(
            f"{path}: expected uint8 data of shape [N, {3 * side * side}], got {data.dtype} {data.shape}"
        )
    return torch.from_numpy(data.reshape(-1, 3, side, side).copy())


def _get(batch: dict, key: str, path: Path):
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise ValueError(
        f"{path} has no {key!r} entry (keys: {sorted(map(str, batch))}); is it a CIFAR-10 python batch?"
    )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays, nothing else: a CIFAR-10 batch needs no more,
    and a pickle naming other code (a ``__reduce__`` payload) is refused, not run."""

    def find_class(self, module: str, name: str):
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): __import__("codecs").encode,
        }  # protocol 2's bytes
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        return allowed[module, name]


def _cifar10(split: str, data_dir: PathLike | None) -> ImageData:
    """The python batches: pickles of {b"data": uint8 [10000, 3072], b"labels": list}, read
    by an unpickler that builds plain data and numpy arrays only (a file that names any
    other code is refused with a ``ValueError`` naming it, never run)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = _find(data_dir, "cifar10", [(n,) for n in names], subdirs=("", "cifar-10-batches-py"))
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            try:
                batch = _BatchUnpickler(f, encoding="bytes").load()
            except pickle.UnpicklingError as err:
                raise ValueError(
                    f"{path} is not a CIFAR-10 python batch ({err}: loading it could run "
                    "code, so it was not opened); use the batches of the CIFAR-10 "
                    "site, cifar-10-python.tar.gz"
                ) from None
        images.append(_flat_rgb(_get(batch, "data", path), path))
        labels.append(torch.as_tensor(np.asarray(_get(batch, "labels", path)), dtype=torch.long))
    return ImageData(torch.cat(images), torch.cat(labels), 256, "cifar10")


def _imagenet32(split: str, data_dir: PathLike | None) -> ImageData:
    """Downsampled ImageNet 32×32 npz batches: ``data`` uint8 [N, 3072], ``labels`` 1..1000."""
    names = [f"train_data_batch_{i}.npz" for i in range(1, 11)] if split == "train" else ["val_data.npz"]
    subdirs = ("", "Imagenet32_train_npz" if split == "train" else "Imagenet32_val_npz")
    paths = _find(data_dir, "imagenet32", [(n,) for n in names], subdirs=subdirs)
    images, labels = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as batch:
            images.append(_flat_rgb(batch["data"], path))
            y = torch.as_tensor(np.asarray(batch["labels"]).astype(np.int64)).reshape(-1)
        if y.numel() and int(y.min()) < 1:
            raise ValueError(f"{path}: labels must be 1-based (1..1000) as distributed, got {int(y.min())}")
        labels.append(y - 1)
    return ImageData(torch.cat(images), torch.cat(labels), 256, "imagenet32")


def _digits(split: str, data_dir: PathLike | None) -> ImageData:
    """sklearn's 8×8 digits (values 0..16, 17 levels), split by a seeded permutation.

    ``torch.randperm(N, generator=manual_seed(DIGITS_SPLIT_SEED))``: the first
    ⌊N·DIGITS_TEST_FRACTION⌋ = 359 indices are the test split, the other 1438 train.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    n = images.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = int(n * DIGITS_TEST_FRACTION)
    idx = perm[n_test:] if split == "train" else perm[:n_test]
    idx = idx.sort().values
    return ImageData(images[idx], labels[idx], 17, "digits")


#: Name → loader ``(split, data_dir) -> ImageData``.
DATASETS: dict[str, Callable[[str, PathLike | None], ImageData]] = {
    "digits": _digits,
    "mnist": _idx_dataset("mnist"),
    "fashion-mnist": _idx_dataset("fashion-mnist"),
    "cifar10": _cifar10,
    "imagenet32": _imagenet32,
}

#: Datasets that read no files (a data folder given for them is a mistake).
FILELESS = ("digits",)


def load_dataset(name: str, split: str = "train", data_dir: PathLike | None = None) -> ImageData:
    """Load the ``"train"`` or ``"test"`` split of a dataset in ``DATASETS`` from ``data_dir``.

    ``data_dir`` is the dataset's own folder or the folder holding it (e.g. ``data`` or
    ``data/fashion-mnist``). ``digits`` needs no files (and refuses a data_dir). ``mnist``/``fashion-mnist``: the IDX files
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. ``cifar10``: the python batches
    ``data_batch_1..5``/``test_batch`` in data_dir or data_dir/cifar-10-batches-py.
    ``imagenet32``: ``train_data_batch_1..10.npz``/``val_data.npz`` (labels made 0-based).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name in FILELESS and data_dir is not None:
        raise ValueError(
            f"{name} comes with scikit-learn and reads no files, yet a data folder "
            f"({data_dir}) was given: drop --data-dir (data_dir in Python), or pick "
            "the dataset that folder holds with --dataset"
        )
    return DATASETS[name](split, data_dir)
