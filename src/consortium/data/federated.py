"""Per-member views of a partitioned pool, plus the server's test and validation splits.

Members hold index arrays into one shared pool: 1,000 members cost 1,000 small index arrays,
not 1,000 copies of the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from consortium.data.partition import Partition, partition
from consortium.data.sources import Dataset, DatasetSplits


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
    """A pool split among members, and the server's own splits.

    ``partition`` indexes the pool; ``client_train``/``client_test`` split each member's part
    into its own views. ``pool_groups`` / ``test_groups`` carry the natural group (domain) ids
    of the pool and the global test set when the data has them.
    """

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
        """Member ``cid``'s view: the shared pool plus its own train/test index arrays."""
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
        """Per-member train/test sizes and class counts: the record of who holds what."""
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


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _held_count(fraction: float, n: int) -> int:
    """Samples a fraction holds out: ceil, as scikit-learn counts a float ``test_size``."""
    return math.ceil(fraction * n)


def _split_seed(seed: int, offset: int) -> int:
    """scikit-learn's seed for one split: the run seed plus the split's offset, kept in
    [0, 2**32) as scikit-learn demands (a run seed may be any non-negative integer)."""
    return (seed + offset) % 2**32


def _stratified_split(y: np.ndarray, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (kept, held-out) positions into ``y``, ``n_held`` of them held out.

    Stratified when every class has two samples and both sides have room for every class;
    otherwise a plain random split rather than an obscure error. The split is the one
    scikit-learn's ``train_test_split(..., random_state=seed, stratify=...)`` draws, sample
    for sample (tests/data/test_federated.py compares them), computed here because importing
    ``sklearn.model_selection`` costs most of a second at every start.
    """
    idx = np.arange(len(y))
    if n_held == 0:
        return idx, idx[:0]
    if n_held >= len(y):
        raise ValueError(f"cannot hold out {n_held} of {len(y)} samples and keep any")
    n_kept = len(y) - n_held
    rng = np.random.RandomState(seed)
    _, codes = np.unique(y, return_inverse=True)
    counts = np.bincount(codes.reshape(-1))
    if counts.min() < 2 or min(n_held, n_kept) < len(counts):
        order = rng.permutation(len(y))
        return np.sort(order[n_held:]), np.sort(order[:n_held])
    # every class's share of each side, rounded the way scikit-learn rounds it (the remainder
    # goes to the classes with the largest fractional shares, ties broken at random) ...
    kept_per_class = _apportion(counts, n_kept, rng)
    held_per_class = _apportion(counts - kept_per_class, n_held, rng)
    # ... then each class's samples in a random order, the first ones kept, the next held out
    by_class = np.split(np.argsort(codes.reshape(-1), kind="mergesort"), np.cumsum(counts)[:-1])
    kept, held = [], []
    for members, k, h in zip(by_class, kept_per_class, held_per_class, strict=True):
        shuffled = members[rng.permutation(len(members))]
        kept.append(shuffled[:k])
        held.append(shuffled[k : k + h])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _apportion(counts: np.ndarray, total: int, rng: np.random.RandomState) -> np.ndarray:
    """``total`` draws spread over classes in proportion to ``counts``: the floors of the exact
    shares, then one more for the classes with the largest remainders, largest first, a random
    choice among equal remainders (scikit-learn's rule, so the seeded splits match)."""
    exact = counts / counts.sum() * total
    share = np.floor(exact)
    missing = int(total - share.sum())
    if missing > 0:
        remainder = exact - share
        for value in np.unique(remainder)[::-1]:
            (tied,) = np.where(remainder == value)
            take = min(len(tied), missing)
            share[rng.choice(tied, size=take, replace=False)] += 1
            missing -= take
            if missing == 0:
                break
    return share.astype(int)


def _split_client(
    indices: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A member's own train/test views: >= 1 train sample; >= 1 test sample from 5 samples on."""
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
    partitioner: Callable[[np.ndarray, np.ndarray], Partition] | None = None,
) -> FederatedData:
    """Load a dataset (or take the given splits) and split it among members.

    ``partitioner(positions, labels)``, when given, makes the partition instead of ``scheme``
    (a ``flwr-datasets`` partitioner through :mod:`consortium.data.bridges`): it gets the
    pool's positions in the training split and their labels, and returns a :class:`Partition`
    of the pool, which is checked to be disjoint and complete.

    Order of the splits (all seeded): the global test set (the official test split, else a
    stratified ``test_fraction`` of the data); optional stratified subsampling of the pool to
    ``max_samples``; the server validation split (``server_val_fraction``); the partition of
    the rest among members; each member's own train/test views (``client_test_fraction``).
    Splits are composed as index arrays and the pool is materialised once at the end: when
    nothing is carved out of the training split, ``pool_x`` *is* ``splits.train.x``.
    """
    _check_fraction("client_test_fraction", client_test_fraction)
    _check_fraction("server_val_fraction", server_val_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if isinstance(dataset, str):
        from consortium.data.registry import load_dataset

        dataset = load_dataset(dataset, path)
    splits = dataset
    train: Dataset = splits.train
    keep = np.arange(len(train))  # positions in the training split that stay in the pool
    if splits.test is not None:
        test_x, test_y, test_groups = splits.test.x, splits.test.y, splits.test.groups
    else:
        # Stratify by domain and class together, so every domain has its own test samples.
        strata = train.y
        if train.groups is not None:
            pairs = np.stack([np.asarray(train.groups), train.y])
            strata = np.unique(pairs, axis=1, return_inverse=True)[1].reshape(-1)
        n_test = _held_count(test_fraction, len(train))
        kept, held = _stratified_split(strata, n_test, _split_seed(seed, 0))
        test_x, test_y = train.x[held], train.y[held]
        test_groups = None if train.groups is None else train.groups[held]
        keep = kept
    if max_samples is not None and max_samples < len(keep):
        n_drop = len(keep) - max_samples
        kept, _ = _stratified_split(train.y[keep], n_drop, _split_seed(seed, 1))
        keep = keep[kept]
    n_val = _held_count(server_val_fraction, len(keep))
    kept, held = _stratified_split(train.y[keep], n_val, _split_seed(seed, 2))
    val_x, val_y = train.x[keep[held]], train.y[keep[held]]
    keep = keep[kept]
    if len(keep) == len(train):
        x, y, groups = train.x, train.y, train.groups
    else:
        x, y = train.x[keep], train.y[keep]
        groups = None if train.groups is None else train.groups[keep]
    rng = np.random.default_rng(seed)
    if partitioner is not None:
        part = partitioner(keep, y)
        part.validate(len(y))
        if part.num_clients != num_clients:
            raise ValueError(f"the partitioner made {part.num_clients} parts for {num_clients}")
        scheme = str(getattr(partitioner, "name", "custom"))
    else:
        knobs = {"alpha": alpha, "beta": beta, "k": k, "min_size": min_size, "groups": groups}
        part = partition(y, num_clients, scheme, rng=rng, **knobs)  # type: ignore[arg-type]
    sizes = part.sizes()
    if sizes.min() == 0:
        raise ValueError(
            f"{scheme}: member {int(np.argmin(sizes))} got no samples from a pool of {len(y)}; "
            "use fewer members or a larger min_size"
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
