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
_CUT_TOLERANCE = 1e-6  # far above float error of a cumulative share x pool size, far below 1


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
        """Raise unless the index sets are disjoint and cover ``0..n-1`` exactly.

        Training code trusts this invariant (no sample counted twice, none lost), so every
        partitioner checks its own result before returning it.
        """
        if not self.client_indices:
            allidx = np.zeros(0, np.int64)
        else:
            allidx = np.concatenate([np.asarray(ix).ravel() for ix in self.client_indices])
        if allidx.size and not np.issubdtype(allidx.dtype, np.integer):
            raise ValueError(f"partition indices must be integers, got {allidx.dtype}")
        if allidx.size and (allidx.min() < 0 or allidx.max() >= n):
            raise ValueError(f"partition has indices outside 0..{n - 1}")
        counts = np.bincount(allidx.astype(np.int64), minlength=n)
        repeated, missing = int((counts > 1).sum()), int((counts == 0).sum())
        if repeated or missing:
            raise ValueError(
                f"partition is not a disjoint, complete cover of {n} samples: "
                f"{repeated} indices repeated, {missing} missing"
            )

    def report_table(self, labels: np.ndarray, num_classes: int, title: str = "partition") -> Table:
        """Per-member sizes and class counts, so a skew can be seen before training on it."""
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
) -> list[np.ndarray]:
    """Label skew as in NIID-Bench: per class, member shares ~ Dir(alpha).

    Members already holding their fair share ``n / N`` get no more of later classes (the
    balance rule keeps sizes from running away); the whole draw is repeated until every member
    has ``min_size`` samples. Classes are dealt in ascending order of their id. When the draw
    puts no mass on the members still below their share (a tiny alpha underflows to exact
    zeros), the class is split evenly among those members: never among the full ones. While a
    class is left, some member is below its share, so that set is never empty.
    """
    n = len(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, np.int64)
        for members in by_class:
            idx = rng.permutation(members)
            p = rng.dirichlet(np.full(num_clients, alpha))
            open_ = sizes < n / num_clients
            p = np.where(open_, p, 0.0)
            total = p.sum()
            p = p / total if np.isfinite(total) and total > 0 else open_ / open_.sum()
            # Cut where the cumulative shares fall. The tolerance undoes float rounding: a
            # share summing to 1 - 1e-16 before a full last member would otherwise hand that
            # member a sample against the balance rule.
            cuts = np.floor(np.cumsum(p) * len(idx) + _CUT_TOLERANCE).astype(np.int64)[:-1]
            for j, chunk in enumerate(np.split(idx, cuts)):
                chunks[j].append(chunk)
                sizes[j] += len(chunk)
        if sizes.min() >= min_size:
            return [np.concatenate(c) for c in chunks]
    raise ValueError(
        f"dirichlet: min_size={min_size} unreachable, no draw in {max_tries} tries gave every "
        "member that many samples; use a larger alpha, fewer members or a smaller min_size"
    )


def _quantity(
    n: int, num_clients: int, beta: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Quantity skew: every member gets ``min_size``, the rest is shared ~ Dir(beta); IID samples.

    Guaranteeing ``min_size`` first (instead of redrawing until a draw happens to satisfy it)
    never fails for small beta or many members; shares are rounded by largest remainder (ties
    go to the lower member id), so every member's size is within one of its exact share.
    """
    spare = n - min_size * num_clients
    if spare < 0:
        raise ValueError(
            f"quantity: {num_clients} members x min_size {min_size} exceed {n} samples"
        )
    share = rng.dirichlet(np.full(num_clients, beta))
    if not np.all(np.isfinite(share)) or share.sum() <= 0:
        share = np.ones(num_clients)  # equal shares (normalised below)
    raw = share / share.sum() * spare
    sizes = np.floor(raw).astype(np.int64)
    largest_remainders = np.argsort(sizes - raw, kind="stable")
    sizes[largest_remainders[: spare - int(sizes.sum())]] += 1
    sizes += min_size
    return list(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


def _label_k(
    labels: np.ndarray, num_clients: int, k: int, rng: np.random.Generator
) -> list[list[int]]:
    """Member i holds class i mod C plus k-1 other random classes.

    Each class's samples are split evenly among its holders. NIID-Bench drops classes nobody
    holds; we need a complete cover, so each such class is given whole to one random member,
    which then holds more than k classes. That is certain when members x k < classes, and can
    happen otherwise too (the random picks may all miss a class); with at least as many
    members as classes, every class is somebody's own and no member holds more than k.
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
    """Split ``len(labels)`` samples among ``num_clients`` members as disjoint index sets.

    Schemes: ``iid`` (random equal split), ``homogeneous`` (equal count of each class, +-1),
    ``dirichlet`` (label skew, Dir(alpha) per class, NIID-Bench balance rule, >= min_size each,
    at most ``max_tries`` draws), ``quantity`` (min_size each plus a Dir(beta) share of the rest,
    samples IID), ``label_k`` (k classes per member; classes nobody drew go to one random
    member, so the cover stays complete), ``groups`` (natural groups / domains given by
    ``groups``: one member per group, or each group split IID among several members).
    Deterministic given ``rng``; every result is validated before it is returned.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative class ids")
    n = len(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise ValueError(f"cannot split {n} samples among {num_clients} members")
    if not (alpha > 0 and beta > 0):  # also rejects NaN
        raise ValueError(f"alpha and beta must be > 0, got alpha={alpha}, beta={beta}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    if scheme == "iid":
        parts: list = _iid(n, num_clients, rng)
    elif scheme == "homogeneous":
        parts = _homogeneous(labels, num_clients, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, min_size, rng, max_tries)
    elif scheme == "quantity":
        parts = _quantity(n, num_clients, beta, min_size, rng)
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
