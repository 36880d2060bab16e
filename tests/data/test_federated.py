"""Member views: index arrays into one pool, disjoint train/test, server splits."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from consortium.data import Dataset, DatasetSplits, build_federated_data, load_dataset
from consortium.data.federated import _split_client

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def id_splits(n=600, num_classes=6, groups=None, with_test=False):
    """Samples whose single pixel encodes their own index, so any split can be traced back."""
    x = (np.arange(n, dtype=np.float32) / n).reshape(n, 1, 1, 1)
    y = np.arange(n, dtype=np.int64) % num_classes
    train = Dataset("ids", x, y, num_classes, groups)
    test = Dataset("ids", x[:10].copy(), y[:10].copy(), num_classes) if with_test else None
    return DatasetSplits(train, test)


def ids(x, n=600):
    return np.rint(x.reshape(-1) * n).astype(int)


def test_views_share_the_pool_and_are_disjoint():
    fd = build_federated_data(
        "digits", num_clients=6, scheme="dirichlet", alpha=0.5, seed=0, server_val_fraction=0.1
    )
    seen = []
    for cid in range(fd.num_clients):
        c = fd.client(cid)
        assert c.x is fd.pool_x and c.y is fd.pool_y  # views, not copies
        assert np.shares_memory(c.x, fd.pool_x)
        assert c.client_id == cid and c.num_classes == 10
        assert not set(c.train_indices) & set(c.test_indices)
        assert c.num_test >= 1 and c.num_train >= 1
        x, y = c.train_arrays()
        assert x.shape == (c.num_train, 1, 8, 8) and np.array_equal(y, fd.pool_y[c.train_indices])
        assert c.test_arrays()[0].shape == (c.num_test, 1, 8, 8)
        seen += c.train_indices.tolist() + c.test_indices.tolist()
    assert sorted(seen) == list(range(len(fd.pool_y)))  # every pool sample belongs to one member
    assert len(fd.test_y) == pytest.approx(0.2 * 1797, abs=2)
    assert len(fd.val_y) == pytest.approx(0.1 * (1797 - len(fd.test_y)), abs=2)
    assert np.array_equal(
        fd.pooled_train_indices(),
        np.sort(np.concatenate([fd.client(c).train_indices for c in range(6)])),
    )


def test_digits_pool_val_and_test_are_a_disjoint_cover():
    digits = load_dataset("digits").train
    fd = build_federated_data("digits", num_clients=5, server_val_fraction=0.1, seed=2)
    assert fd.input_shape == (1, 8, 8) and fd.num_classes == 10
    assert len(fd.pool_y) + len(fd.val_y) + len(fd.test_y) == 1797

    def rows(x):  # one row per sample, sorted: a multiset of images
        flat = x.reshape(len(x), -1)
        return flat[np.lexsort(flat.T[::-1])]

    union = np.concatenate([fd.pool_x, fd.val_x, fd.test_x])
    assert np.array_equal(rows(union), rows(digits.x))  # nothing lost, nothing duplicated
    test_share = np.bincount(fd.test_y, minlength=10) / len(fd.test_y)
    assert np.abs(test_share - np.bincount(digits.y) / 1797).max() < 0.01  # stratified


def test_splits_trace_back_to_disjoint_samples():
    fd = build_federated_data(
        id_splits(), num_clients=4, server_val_fraction=0.2, max_samples=300, seed=1
    )
    pool, val, test = ids(fd.pool_x), ids(fd.val_x), ids(fd.test_x)
    assert len(test) == 120 and len(pool) + len(val) == 300 and len(val) == 60
    assert not set(pool) & set(val) and not set(pool) & set(test) and not set(val) & set(test)
    assert np.array_equal(pool % 6, fd.pool_y)  # labels travel with their samples
    assert (np.bincount(fd.val_y) == 10).all()  # stratified


def test_official_test_split_is_kept_and_pool_is_not_copied():
    splits = id_splits(with_test=True)
    fd = build_federated_data(splits, num_clients=3)
    assert fd.pool_x is splits.train.x and fd.pool_y is splits.train.y
    assert fd.test_x is splits.test.x
    assert fd.val_x.shape == (0, 1, 1, 1) and fd.val_y.shape == (0,)


def test_val_carving_copies_the_pool_once_into_its_own_array():
    splits = id_splits(with_test=True)
    fd = build_federated_data(splits, num_clients=3, server_val_fraction=0.25)
    assert fd.pool_x.base is None and not np.shares_memory(fd.pool_x, splits.train.x)
    assert len(fd.val_y) == 150 and len(fd.pool_y) == 450


@pytest.mark.parametrize("seed", [2**32 - 2, 2**32 - 1, 2**32, 2**40])
def test_any_non_negative_seed_works(seed):
    # the config accepts any seed >= 0; scikit-learn's splits only take seeds below 2**32
    kw = {"num_clients": 4, "seed": seed, "server_val_fraction": 0.1, "max_samples": 1000}
    a, b = build_federated_data("digits", **kw), build_federated_data("digits", **kw)
    assert np.array_equal(a.val_y, b.val_y) and np.array_equal(a.test_y, b.test_y)
    assert all(np.array_equal(x, y) for x, y in zip(a.client_train, b.client_train, strict=True))


def test_seeded_and_max_samples():
    a = build_federated_data("digits", num_clients=4, scheme="iid", seed=3, max_samples=1000)
    b = build_federated_data("digits", num_clients=4, scheme="iid", seed=3, max_samples=1000)
    c = build_federated_data("digits", num_clients=4, scheme="iid", seed=4, max_samples=1000)
    assert len(a.pool_y) == 1000  # exactly: 1437 - 1000 as a float fraction rounds to 999
    assert all(np.array_equal(a.client_train[i], b.client_train[i]) for i in range(4))
    assert all(np.array_equal(a.client_test[i], b.client_test[i]) for i in range(4))
    assert np.array_equal(a.pool_x, b.pool_x) and not np.array_equal(a.pool_x, c.pool_x)


def test_groups_scheme_keeps_groups_with_their_samples():
    groups = np.arange(600) // 200  # three domains of 200 samples
    fd = build_federated_data(id_splits(groups=groups), num_clients=6, scheme="groups")
    assert fd.pool_groups is not None and len(fd.pool_groups) == len(fd.pool_y)
    assert np.array_equal(fd.pool_groups, ids(fd.pool_x) // 200)
    per_client = [np.unique(fd.pool_groups[ix]) for ix in fd.partition.client_indices]
    assert [g.tolist() for g in per_client] == [[0], [0], [1], [1], [2], [2]]


@pytest.mark.parametrize(
    ("n", "fraction", "n_test"),
    [(1, 0.2, 0), (2, 0.2, 0), (4, 0.2, 1), (5, 0.1, 1), (10, 0.2, 2), (10, 0.0, 0), (3, 0.9, 2)],
)
def test_member_train_test_split_rounding(n, fraction, n_test):
    train, test = _split_client(np.arange(100, 100 + n), fraction, np.random.default_rng(0))
    assert len(test) == n_test and len(train) == n - n_test >= 1
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100, 100 + n))


def test_empty_member_is_a_clear_error():
    labels = np.array([0] + [1] * 59)  # class 0 has one sample but two holders (k=1)
    x = np.zeros((60, 1, 1, 1), np.float32)
    splits = DatasetSplits(Dataset("lopsided", x, labels, 2), None)
    with pytest.raises(ValueError, match="got no samples"):
        build_federated_data(splits, num_clients=4, scheme="label_k", k=1, test_fraction=0.1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"client_test_fraction": 1.0}, "client_test_fraction"),
        ({"client_test_fraction": -0.1}, "client_test_fraction"),
        ({"server_val_fraction": 1.0}, "server_val_fraction"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"max_samples": 0}, "max_samples"),
        ({"seed": -1}, "seed"),
        ({"scheme": "nope"}, "unknown partition scheme"),
        ({"num_clients": 0}, "num_clients"),
    ],
)
def test_bad_arguments(kw, match):
    kw.setdefault("num_clients", 2)
    with pytest.raises(ValueError, match=match):
        build_federated_data("digits", **kw)


def test_bad_member_id():
    fd = build_federated_data("digits", num_clients=2)
    with pytest.raises(IndexError, match=r"no member 5: this federation has members 0\.\.1"):
        fd.client(5)
    with pytest.raises(IndexError):
        fd.client(-1)


def test_report_table_lists_every_member():
    fd = build_federated_data("digits", num_clients=3, scheme="label_k", k=2)
    console = Console(record=True, width=200)
    console.print(fd.report_table())
    text = console.export_text()
    assert "digits: 3 members, label_k partition" in text
    lines = [line for line in text.splitlines() if line.strip().startswith("│")]
    assert len(lines) == 4  # three members and the total
    total = [int(v) for v in lines[-1].replace("│", " ").split()[1:]]
    assert total[0] == sum(len(t) for t in fd.client_train)
    assert total[1] == sum(len(t) for t in fd.client_test)


@pytest.mark.skipif(
    not FMNIST.exists(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_mnist_quick_federation():
    fd = build_federated_data(
        "fashion_mnist", num_clients=5, scheme="dirichlet", alpha=0.5, max_samples=2000
    )
    assert len(fd.pool_y) == 2000 and fd.test_x.shape == (10000, 1, 28, 28)
    assert fd.input_shape == (1, 28, 28)
    assert (np.bincount(fd.pool_y) == 200).all()


def test_test_split_is_stratified_by_group_and_class():
    groups = np.arange(600) // 200
    fd = build_federated_data(id_splits(groups=groups), num_clients=3, scheme="groups", seed=5)
    assert fd.test_groups is not None and np.array_equal(fd.test_groups, ids(fd.test_x) // 200)
    cells = np.bincount(fd.test_groups * 6 + fd.test_y, minlength=18)
    assert cells.min() >= 6 and cells.max() <= 7  # 120 test samples over 18 (domain, class)


def test_official_test_groups_travel_with_the_test_split():
    splits = id_splits(groups=np.arange(600) % 2, with_test=True)
    test = Dataset("ids", splits.test.x, splits.test.y, 6, np.arange(10) % 2)
    fd = build_federated_data(DatasetSplits(splits.train, test), num_clients=2, scheme="groups")
    assert fd.test_groups is test.groups and fd.pool_groups is splits.train.groups
    assert build_federated_data("digits", num_clients=2).test_groups is None


@pytest.mark.parametrize("case", range(60))
def test_stratified_split_is_scikit_learns_split(case: int) -> None:
    """The split computed here is the one scikit-learn draws for the same seed, sample for sample
    (seeded figures in the docs depend on it), stratified or not."""
    from sklearn.model_selection import train_test_split

    from consortium.data.federated import _stratified_split

    rng = np.random.default_rng(case)
    n = int(rng.integers(4, 400))
    classes = int(rng.integers(1, 12))
    # skewed class sizes, some classes possibly with one sample (then no stratification)
    y = rng.choice(classes, size=n, p=rng.dirichlet(np.full(classes, 0.7))) * 3 + 1
    n_held = int(rng.integers(1, n))
    seed = int(rng.integers(2**31))
    idx = np.arange(n)
    counts = np.unique(y, return_counts=True)[1]
    stratify = counts.min() >= 2 and min(n_held, n - n_held) >= len(counts)
    kept, held = train_test_split(
        idx, test_size=n_held, random_state=seed, stratify=y if stratify else None
    )
    ours = _stratified_split(y, n_held, seed)
    assert np.array_equal(ours[0], np.sort(kept))
    assert np.array_equal(ours[1], np.sort(held))


def test_building_digits_does_not_import_scikit_learn() -> None:
    """Importing sklearn.model_selection costs most of a second; the demo's data needs none."""
    code = (
        "import sys; from consortium.data import build_federated_data; "
        "build_federated_data('digits', num_clients=10, scheme='dirichlet', alpha=0.3, seed=0, "
        "server_val_fraction=0.1); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
