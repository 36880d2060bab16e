"""Partition guarantees: disjoint, complete, seeded, and each scheme's own promise."""

import numpy as np
import pytest
from rich.console import Console

from consortium.data import SCHEMES, partition

N, C = 2000, 10
LABELS = np.random.default_rng(0).integers(0, C, N)
GROUPS = np.random.default_rng(1).integers(0, 4, N)


def split(scheme, seed=0, **kw):
    kw.setdefault("groups", GROUPS)
    return partition(LABELS, 8, scheme, rng=np.random.default_rng(seed), **kw)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_is_disjoint_complete_sorted_and_seeded(scheme):
    p = split(scheme)
    p.validate(N)
    allidx = np.concatenate(p.client_indices)
    assert len(allidx) == len(set(allidx.tolist())) == N
    assert all(np.all(np.diff(ix) > 0) for ix in p.client_indices)
    again = split(scheme)
    pairs = zip(p.client_indices, again.client_indices, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    other = split(scheme, seed=1)
    pairs = zip(p.client_indices, other.client_indices, strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_validate_catches_overlap_and_gaps():
    from consortium.data import Partition

    with pytest.raises(ValueError):
        Partition((np.array([0, 1]), np.array([1, 2]))).validate(3)
    with pytest.raises(ValueError):
        Partition((np.array([0]), np.array([2]))).validate(3)


def mean_classes(p):
    return p.class_counts(LABELS, C).astype(bool).sum(1).mean()


def label_entropy(p):
    counts = p.class_counts(LABELS, C).astype(float)
    probs = counts / counts.sum(1, keepdims=True)
    return float(np.mean([-(q[q > 0] * np.log(q[q > 0])).sum() for q in probs]))


def test_dirichlet_alpha_controls_skew_and_min_size_holds():
    skewed = split("dirichlet", alpha=0.1, min_size=15)
    flat = split("dirichlet", alpha=100.0, min_size=15)
    assert label_entropy(skewed) < label_entropy(flat) - 0.5
    assert mean_classes(skewed) < mean_classes(flat)
    assert skewed.sizes().min() >= 15


def test_dirichlet_unreachable_min_size_is_a_clear_error():
    with pytest.raises(ValueError, match="min_size"):
        partition(
            LABELS[:100],
            8,
            "dirichlet",
            rng=np.random.default_rng(0),
            alpha=0.01,
            min_size=12,
            max_tries=20,
        )


def test_quantity_beta_controls_size_spread():
    small = split("quantity", beta=0.3, min_size=10).sizes()
    big = split("quantity", beta=50.0, min_size=10).sizes()
    assert small.min() >= 10 and big.min() >= 10
    assert small.std() > big.std()


def test_homogeneous_class_counts_differ_by_at_most_one():
    counts = split("homogeneous").class_counts(LABELS, C)
    assert (counts.max(0) - counts.min(0)).max() <= 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_label_k_members_hold_k_classes(k):
    p = partition(LABELS, 10, "label_k", rng=np.random.default_rng(0), k=k)
    held = p.class_counts(LABELS, C).astype(bool).sum(1)
    assert held.min() >= k
    # with 10 members x k >= 10 classes nobody needs an extra unheld class
    assert held.max() == k


def test_groups_one_member_per_group_and_several_per_group():
    p = partition(LABELS, 4, "groups", rng=np.random.default_rng(0), groups=GROUPS)
    assert [len(np.unique(GROUPS[ix])) for ix in p.client_indices] == [1, 1, 1, 1]
    p8 = split("groups")
    assert sorted(int(np.unique(GROUPS[ix])[0]) for ix in p8.client_indices) == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]


@pytest.mark.parametrize(
    ("scheme", "kw", "match"),
    [
        ("nope", {}, "unknown partition scheme"),
        ("iid", {"num_clients": 0}, "num_clients"),
        ("iid", {"num_clients": N + 1}, "cannot split"),
        ("dirichlet", {"alpha": 0.0}, "alpha"),
        ("label_k", {"k": 11}, "k must be"),
        ("groups", {"groups": None}, "group id"),
        ("groups", {"groups": GROUPS[:10]}, "shape"),
        ("groups", {"num_clients": 3, "groups": GROUPS}, "at least as many"),
        ("quantity", {"min_size": 300}, "exceed"),
    ],
)
def test_bad_input_raises_one_clear_error(scheme, kw, match):
    num_clients = kw.pop("num_clients", 8)
    with pytest.raises(ValueError, match=match):
        partition(LABELS, num_clients, scheme, rng=np.random.default_rng(0), **kw)


def test_report_table_renders_counts():
    p = split("label_k", k=2)
    console = Console(record=True, width=200)
    console.print(p.report_table(LABELS, C, title="label-k"))
    text = console.export_text()
    assert "label-k" in text and "all" in text and str(N) in text
