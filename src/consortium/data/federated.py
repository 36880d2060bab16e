"""Per-member views of a partitioned pool, plus the server's test and validation splits.

Members hold index arrays into one shared pool: 1,000 members cost 1,000 small index arrays,
not 1,000 copies of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table
from sklearn.model_selection import train_test_split

from consortium.data.partition import Partition, partition
from consortium.data.sources import Dataset, DatasetSplits, load_dataset


@dataclass(frozen=True)
class ClientData:
    """What one member holds: index views into shared arrays, no copies."""

    client_id: int
    x: np.ndarray
    y: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    num_classes: int

    @property
    def num_train(self) -> int:
        return len(self.train_indices)

    @property
    def num_test(self) -> int:
        return len(self.test_indices)

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Materialised training arrays (copies, made only when asked)."""
        return self.x[self.train_indices], self.y[self.train_indices]

    def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[self.test_indices], self.y[self.test_indices]


@dataclass(frozen=True)
class FederatedData:
    """A pool split among members, and the server's own splits."""

    name: str
    scheme: str
    num_classes: int
    input_shape: tuple[int, ...]
    pool_x: np.ndarray
    pool_y: np.ndarray
    partition: Partition
    client_train: tuple[np.ndarray, ...]
    client_test: tuple[np.ndarray, ...]
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    pool_groups: np.ndarray | None = None
    test_groups: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return len(self.client_train)

    def client(self, cid: int) -> ClientData:
        if not 0 <= cid < self.num_clients:
            raise IndexError(
                f"no member {cid}: this federation has members 0..{self.num_clients - 1}"
            )
        return ClientData(
            cid,
            self.pool_x,
            self.pool_y,
            self.client_train[cid],
            self.client_test[cid],
            self.num_classes,
        )

    def pooled_train_indices(self) -> np.ndarray:
        """Every member's training indices (the centralised reference trains on these)."""
        return np.sort(np.concatenate(self.client_train))

    def report_table(self) -> Table:
        table = Table(
            title=f"{self.name}: {self.num_clients} members, {self.scheme} partition; "
            f"server test {len(self.test_y)}, validation {len(self.val_y)}"
        )
        table.add_column("member", justify="right")
        table.add_column("train", justify="right")
        table.add_column("test", justify="right")
        table.add_column("classes", justify="right")
        per_class = self.num_classes <= 20
        if per_class:
            for c in range(self.num_classes):
                table.add_column(str(c), justify="right", style="dim")
        totals = np.zeros(self.num_classes, np.int64)
        for cid in range(self.num_clients):
            counts = np.bincount(self.pool_y[self.client_train[cid]], minlength=self.num_classes)
            totals += counts
            cells = [
                str(cid),
                str(len(self.client_train[cid])),
                str(len(self.client_test[cid])),
                str(int((counts > 0).sum())),
            ]
            table.add_row(*cells, *([str(int(v)) for v in counts] if per_class else []))
        n_test = sum(len(t) for t in self.client_test)
        table.add_row(
            "all",
            str(int(totals.sum())),
            str(n_test),
            str(int((totals > 0).sum())),
            *([str(int(v)) for v in totals] if per_class else []),
            style="bold",
        )
        return table


def _fraction(name: str, value: float, upper_open: bool = True) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) index arrays, stratified when every class has at least two samples."""
    idx = np.arange(len(y))
    if fraction == 0:
        return idx, idx[:0]
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    kept, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(held)


def _split_client(
    indices: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A member's own train/test split; members with >= 5 samples get >= 1 test sample."""
    n = len(indices)
    n_test = round(fraction * n)
    if fraction > 0 and n >= 5:
        n_test = max(n_test, 1)
    n_test = min(n_test, n - 1) if n > 0 else 0
    perm = rng.permutation(indices)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def build_federated_data(
    dataset: str | DatasetSplits,
    *,
    num_clients: int,
    scheme: str = "iid",
    seed: int = 0,
    path: str | Path | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    k: int = 2,
    min_size: int = 10,
    client_test_fraction: float = 0.2,
    server_val_fraction: float = 0.0,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
) -> FederatedData:
    """Load a dataset and split it among members.

    Order of the splits (all seeded): the global test set (the official test split, else a
    stratified ``test_fraction`` of the data); optional subsampling of the pool to
    ``max_samples``; the server validation split (``server_val_fraction``); the partition of
    the rest among members; each member's own train/test views (``client_test_fraction``).
    """
    _fraction("client_test_fraction", client_test_fraction)
    _fraction("server_val_fraction", server_val_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    splits = load_dataset(dataset, path) if isinstance(dataset, str) else dataset
    train: Dataset = splits.train
    x, y, groups = train.x, train.y, train.groups
    if splits.test is not None:
        test_x, test_y, test_groups = splits.test.x, splits.test.y, splits.test.groups
    else:
        # Stratify by domain and class together, so every domain has its own test samples.
        strata = y if groups is None else groups * train.num_classes + y
        keep, held = _stratified_split(strata, test_fraction, seed)
        test_x, test_y = x[held], y[held]
        test_groups = None if groups is None else groups[held]
        x, y = x[keep], y[keep]
        groups = None if groups is None else groups[keep]
    if max_samples is not None and max_samples < len(y):
        keep, _ = _stratified_split(y, 1 - max_samples / len(y), seed + 1)
        x, y = x[keep], y[keep]
        groups = None if groups is None else groups[keep]
    if server_val_fraction > 0:
        keep, held = _stratified_split(y, server_val_fraction, seed + 2)
        val_x, val_y = x[held], y[held]
        x, y = x[keep], y[keep]
        groups = None if groups is None else groups[keep]
    else:
        val_x, val_y = x[:0], y[:0]
    rng = np.random.default_rng(seed)
    part = partition(
        y,
        num_clients,
        scheme,
        rng=rng,
        alpha=alpha,
        beta=beta,
        k=k,
        min_size=min_size,
        groups=groups,
    )
    split_rng = np.random.default_rng([seed, 1])
    views = [_split_client(ix, client_test_fraction, split_rng) for ix in part.client_indices]
    return FederatedData(
        name=train.name,
        scheme=scheme,
        num_classes=train.num_classes,
        input_shape=tuple(x.shape[1:]),
        pool_x=x,
        pool_y=y,
        partition=part,
        client_train=tuple(v[0] for v in views),
        client_test=tuple(v[1] for v in views),
        test_x=test_x,
        test_y=test_y,
        val_x=val_x,
        val_y=val_y,
        pool_groups=groups,
        test_groups=test_groups,
    )
