"""Partition guarantees: disjoint, complete, sorted, seeded, and each scheme's own promise."""

import numpy as np
import pytest
from rich.console import Console

from consortium.data import SCHEMES, Partition, load_dataset, partition

N, C = 2000, 10
LABELS = np.random.default_rng(0).integers(0, C, N)
GROUPS = np.random.default_rng(1).integers(0, 4, N)


def split(scheme, seed=0, num_clients=8, labels=LABELS, **kw):
    kw.setdefault("groups", GROUPS if len(labels) == N else None)
    return partition(labels, num_clients, scheme, rng=np.random.default_rng(seed), **kw)


def check_cover(p, n):
    p.validate(n)
    allidx = np.concatenate(p.client_indices)
    assert len(allidx) == len(set(allidx.tolist())) == n
    assert all(ix.dtype == np.int64 for ix in p.client_indices)
    assert all(np.all(np.diff(ix) > 0) for ix in p.client_indices)


def same(p, q):
    pairs = zip(p.client_indices, q.client_indices, strict=True)
    return all(np.array_equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_is_disjoint_complete_sorted_and_seeded(scheme):
    p = split(scheme)
    check_cover(p, N)
    assert p.num_clients == 8 and p.sizes().sum() == N
    assert same(p, split(scheme))
    assert not same(p, split(scheme, seed=1))


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "groups"])
def test_every_scheme_on_real_digits(scheme):
    y = load_dataset("digits").train.y
    p = split(scheme, labels=y, num_clients=10, alpha=0.3, min_size=20)
    check_cover(p, len(y))
    counts = p.class_counts(y, 10)
    assert counts.shape == (10, 10) and counts.sum() == len(y)
    assert np.array_equal(counts.sum(0), np.bincount(y, minlength=10))


def test_validate_catches_overlap_gaps_and_strays():
    with pytest.raises(ValueError, match="1 indices repeated, 0 missing"):
        Partition((np.array([0, 1]), np.array([1, 2]))).validate(3)
    with pytest.raises(ValueError, match="0 indices repeated, 1 missing"):
        Partition((np.array([0]), np.array([2]))).validate(3)
    with pytest.raises(ValueError, match="outside"):
        Partition((np.array([0, 1]), np.array([2, 3]))).validate(3)
    Partition((np.array([2]), np.array([0, 1]))).validate(3)


def mean_classes(p):
    return p.class_counts(LABELS, C).astype(bool).sum(1).mean()


def label_entropy(p):
    counts = p.class_counts(LABELS, C).astype(float)
    probs = counts / counts.sum(1, keepdims=True)
    return float(np.mean([-(q[q > 0] * np.log(q[q > 0])).sum() for q in probs]))


def test_iid_sizes_differ_by_at_most_one():
    sizes = split("iid", num_clients=7).sizes()
    assert sizes.max() - sizes.min() <= 1


def test_dirichlet_alpha_controls_skew_and_min_size_holds():
    skewed = split("dirichlet", alpha=0.1, min_size=15)
    flat = split("dirichlet", alpha=100.0, min_size=15)
    assert label_entropy(skewed) < label_entropy(flat) - 0.5
    assert mean_classes(skewed) < mean_classes(flat)
    assert skewed.sizes().min() >= 15 and flat.sizes().min() >= 15


def test_dirichlet_unreachable_min_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"min_size=12 unreachable.*larger alpha"):
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


def test_quantity_never_fails_for_tiny_beta_and_many_members():
    p = split("quantity", num_clients=150, beta=0.05, min_size=12)
    check_cover(p, N)
    assert p.sizes().min() >= 12


def test_quantity_samples_are_iid():
    p = split("quantity", num_clients=4, beta=1.0, min_size=100)
    assert mean_classes(p) == C


def test_homogeneous_class_counts_differ_by_at_most_one():
    p = split("homogeneous", num_clients=7)
    counts = p.class_counts(LABELS, C)
    assert (counts.max(0) - counts.min(0)).max() <= 1
    assert p.sizes().max() - p.sizes().min() <= 1


@pytest.mark.parametrize(("k", "num_clients"), [(1, 10), (2, 10), (3, 10), (2, 5), (4, 3)])
def test_label_k_members_hold_k_classes(k, num_clients):
    p = split("label_k", num_clients=num_clients, k=k)
    check_cover(p, N)
    held = p.class_counts(LABELS, C).astype(bool)
    assert held.sum(1).min() >= k
    # extras come only from classes nobody drew, and with N members at most C - N classes are
    # nobody's own class; with N >= C every class is drawn and each member holds exactly k
    assert held.sum(1).sum() <= num_clients * k + max(0, C - num_clients)
    if num_clients >= C:
        assert (held.sum(1) == k).all()
    for i in range(num_clients):
        assert held[i, i % C]  # member i always holds class i mod C


def test_label_k_exactly_k_when_members_cover_the_classes():
    for seed in range(5):
        held = split("label_k", seed=seed, num_clients=12, k=3).class_counts(LABELS, C)
        assert (held.astype(bool).sum(1) == 3).all()


def test_label_k_gives_unheld_classes_away():
    # 3 members x 1 class: classes 3..9 are held by nobody and must still be covered
    p = split("label_k", num_clients=3, k=1)
    check_cover(p, N)
    assert p.class_counts(LABELS, C).astype(bool).any(0).all()


def test_groups_one_member_per_group_and_several_per_group():
    p = partition(LABELS, 4, "groups", rng=np.random.default_rng(0), groups=GROUPS)
    assert [np.unique(GROUPS[ix]).tolist() for ix in p.client_indices] == [[0], [1], [2], [3]]
    p8 = split("groups")
    assert [np.unique(GROUPS[ix]).tolist() for ix in p8.client_indices] == [
        [0],
        [0],
        [1],
        [1],
        [2],
        [2],
        [3],
        [3],
    ]
    sizes = p8.sizes()
    assert abs(sizes[0] - sizes[1]) <= 1  # a group is split evenly among its members
    p5 = split("groups", num_clients=5)  # group 0 gets the extra member
    assert [len(np.unique(GROUPS[ix])) for ix in p5.client_indices] == [1] * 5
    assert [int(GROUPS[ix[0]]) for ix in p5.client_indices] == [0, 0, 1, 2, 3]


@pytest.mark.parametrize(
    ("scheme", "kw", "match"),
    [
        ("nope", {}, "unknown partition scheme"),
        ("iid", {"num_clients": 0}, "num_clients"),
        ("iid", {"num_clients": N + 1}, "cannot split"),
        ("iid", {"labels": LABELS.astype(float)}, "integer"),
        ("iid", {"labels": LABELS.reshape(2, -1)}, "1-D"),
        ("iid", {"labels": LABELS - 1}, "non-negative"),
        ("dirichlet", {"alpha": 0.0}, "alpha"),
        ("dirichlet", {"alpha": float("nan")}, "alpha"),
        ("quantity", {"beta": -1.0}, "beta"),
        ("dirichlet", {"min_size": -1}, "min_size"),
        ("dirichlet", {"max_tries": 0}, "max_tries"),
        ("label_k", {"k": 11}, "k must be"),
        ("label_k", {"k": 0}, "k must be"),
        ("groups", {"groups": None}, "group id"),
        ("groups", {"groups": GROUPS[:10]}, "shape"),
        ("groups", {"num_clients": 3}, "at least as many"),
        ("quantity", {"min_size": 300}, "exceed"),
    ],
)
def test_bad_input_raises_one_clear_error(scheme, kw, match):
    num_clients = kw.pop("num_clients", 8)
    labels = kw.pop("labels", LABELS)
    kw.setdefault("groups", GROUPS)
    with pytest.raises(ValueError, match=match) as e:
        partition(labels, num_clients, scheme, rng=np.random.default_rng(0), **kw)
    assert "\n" not in str(e.value)


def test_report_table_renders_counts():
    p = split("label_k", k=2)
    console = Console(record=True, width=200)
    console.print(p.report_table(LABELS, C, title="label-k"))
    text = console.export_text()
    assert "label-k" in text and str(N) in text
    total = next(line for line in text.splitlines() if "all" in line)
    assert [int(v) for v in total.replace("│", " ").split()[1:]] == [
        N,
        C,
        *np.bincount(LABELS).tolist(),
    ]


def test_report_table_drops_per_class_columns_for_many_classes():
    labels = np.arange(300) % 30
    p = partition(labels, 3, "iid", rng=np.random.default_rng(0))
    console = Console(record=True, width=200)
    console.print(p.report_table(labels, 30))
    header = console.export_text().splitlines()[2]
    assert "29" not in header
