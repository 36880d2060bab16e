"""Splitting a pool of samples among members: disjoint index sets, never copies of data.

The schemes are the NIID-Bench family used by the fairness literature (IAFL's code, Aequa's
experiments) plus natural groups for domain-skewed federations (FedRA). Every partition covers
the pool exactly once, and ``Partition.validate`` proves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.table import Table

SCHEMES = ("iid", "homogeneous", "dirichlet", "quantity", "label_k", "groups")


@dataclass(frozen=True)
class Partition:
    """Per-member index arrays into the partitioned array, each sorted ascending."""

    client_indices: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def sizes(self) -> np.ndarray:
        return np.array([len(ix) for ix in self.client_indices], np.int64)

    def class_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """(members, classes) sample counts."""
        return np.stack(
            [np.bincount(labels[ix], minlength=num_classes) for ix in self.client_indices]
        )

    def validate(self, n: int) -> None:
        """Raise unless the index sets are disjoint and cover ``0..n-1`` exactly."""
        allidx = np.concatenate(self.client_indices) if self.client_indices else np.array([], int)
        if len(allidx) != n or not np.array_equal(np.sort(allidx), np.arange(n)):
            raise ValueError("partition is not a disjoint, complete cover of the samples")

    def report_table(self, labels: np.ndarray, num_classes: int, title: str = "partition") -> Table:
        counts = self.class_counts(labels, num_classes)
        table = Table(title=title)
        table.add_column("member", justify="right")
        table.add_column("samples", justify="right")
        table.add_column("classes", justify="right")
        per_class = num_classes <= 20
        if per_class:
            for c in range(num_classes):
                table.add_column(str(c), justify="right", style="dim")
        for cid, row in enumerate(counts):
            cells = [str(cid), str(int(row.sum())), str(int((row > 0).sum()))]
            table.add_row(*cells, *([str(int(v)) for v in row] if per_class else []))
        total = counts.sum(0)
        table.add_row(
            "all",
            str(int(total.sum())),
            str(int((total > 0).sum())),
            *([str(int(v)) for v in total] if per_class else []),
            style="bold",
        )
        return table


def _finish(parts: list[np.ndarray] | list[list[int]], n: int) -> Partition:
    p = Partition(tuple(np.sort(np.asarray(ix, np.int64)) for ix in parts))
    p.validate(n)
    return p


def _iid(n: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(n), num_clients))


def _homogeneous(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[list[int]]:
    """Equal numbers of each class per member; remainders go round-robin from a rotating start."""
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, chunk in enumerate(np.array_split(idx, num_clients)):
            parts[(j + offset) % num_clients].extend(chunk.tolist())
        offset += len(idx) % num_clients
    return parts


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_size: int,
    rng: np.random.Generator,
    max_tries: int,
) -> list[list[int]]:
    n = len(labels)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            # NIID-Bench's balance rule: members already holding their share get no more.
            full = np.array([len(part) >= n / num_clients for part in parts])
            p = np.where(full, 0.0, p)
            p = p / p.sum() if p.sum() > 0 else np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_size:
            return parts
    raise ValueError(
        f"dirichlet: no split gave every member >= {min_size} samples in {max_tries} tries; "
        "use a larger alpha, fewer members or a smaller min_size"
    )


def _quantity(
    n: int, num_clients: int, beta: float, min_size: int, rng: np.random.Generator, max_tries: int
) -> list[np.ndarray]:
    if min_size * num_clients > n:
        raise ValueError(f"quantity: {num_clients} members x {min_size} samples exceed {n}")
    for _ in range(max_tries):
        share = rng.dirichlet(np.full(num_clients, beta))
        sizes = np.floor(share * n).astype(int)
        sizes[np.argmax(sizes)] += n - sizes.sum()
        if sizes.min() >= min_size:
            cuts = np.cumsum(sizes)[:-1]
            return list(np.split(rng.permutation(n), cuts))
    raise ValueError(
        f"quantity: no split gave every member >= {min_size} samples in {max_tries} tries; "
        "use a larger beta or a smaller min_size"
    )


def _label_k(
    labels: np.ndarray, num_clients: int, k: int, rng: np.random.Generator
) -> list[list[int]]:
    """Member i holds class i mod C plus k-1 other random classes.

    Each class's samples are split evenly among its holders. NIID-Bench drops classes nobody
    holds; we need a complete cover, so each such class is given whole to one random member
    (that member then holds k+1 classes; it only happens when members x k < classes).
    """
    classes = np.unique(labels)
    num_classes = len(classes)
    if not 1 <= k <= num_classes:
        raise ValueError(f"label_k: k must be in [1, {num_classes}], got {k}")
    held: list[set[int]] = []
    for i in range(num_clients):
        own = i % num_classes
        others = [c for c in range(num_classes) if c != own]
        held.append({own, *rng.choice(others, size=k - 1, replace=False).tolist()})
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for ci, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        holders = [i for i in range(num_clients) if ci in held[i]]
        if not holders:
            holders = [int(rng.integers(num_clients))]
        for holder, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[holder].extend(chunk.tolist())
    return parts


def _groups(groups: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One member per group, or several members per group (IID within the group).

    With more members than groups, members are dealt to groups as evenly as possible (group g
    gets ``num_clients // G`` members, the first ``num_clients % G`` groups one more).
    """
    ids = np.unique(groups)
    if num_clients < len(ids):
        raise ValueError(
            f"groups: {len(ids)} groups need at least as many members, got {num_clients}"
        )
    per_group = [
        num_clients // len(ids) + (1 if g < num_clients % len(ids) else 0) for g in range(len(ids))
    ]
    parts: list[np.ndarray] = []
    for g, count in zip(ids, per_group, strict=True):
        idx = rng.permutation(np.flatnonzero(groups == g))
        if count > len(idx):
            raise ValueError(f"groups: group {g} has {len(idx)} samples for {count} members")
        parts.extend(np.array_split(idx, count))
    return parts


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    rng: np.random.Generator,
    alpha: float = 0.5,
    beta: float = 0.5,
    k: int = 2,
    min_size: int = 10,
    groups: np.ndarray | None = None,
    max_tries: int = 1000,
) -> Partition:
    """Split ``len(labels)`` samples among ``num_clients`` members.

    Schemes: ``iid`` (random equal split), ``homogeneous`` (equal count of each class),
    ``dirichlet`` (label skew, Dir(alpha) per class, NIID-Bench balance rule, >= min_size each),
    ``quantity`` (sizes ~ Dir(beta), >= min_size each, samples IID), ``label_k`` (k classes per
    member), ``groups`` (natural groups / domains given by ``groups``).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise ValueError(f"cannot split {n} samples among {num_clients} members")
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be > 0, got alpha={alpha}, beta={beta}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if scheme == "iid":
        parts: list = _iid(n, num_clients, rng)
    elif scheme == "homogeneous":
        parts = _homogeneous(labels, num_clients, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, min_size, rng, max_tries)
    elif scheme == "quantity":
        parts = _quantity(n, num_clients, beta, min_size, rng, max_tries)
    elif scheme == "label_k":
        parts = _label_k(labels, num_clients, k, rng)
    else:
        if groups is None:
            raise ValueError(
                "the groups scheme needs a group id per sample (this dataset has none)"
            )
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups has shape {groups.shape}, labels {labels.shape}")
        parts = _groups(groups, num_clients, rng)
    return _finish(parts, n)
