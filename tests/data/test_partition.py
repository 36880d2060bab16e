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
    kw = dict(kw)  # the parametrized dict is shared by reruns in one process (mutmut)
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


class ScriptedRng:
    """Stands in for a numpy Generator: permutations are the identity, Dirichlet draws scripted.

    It lets a test state a rule of a scheme exactly (which member gets what) instead of hoping
    that a seed happens to reach the case.
    """

    def __init__(self, draws):
        self.draws = [np.asarray(d, float) for d in draws]

    def permutation(self, x):
        return np.arange(x) if isinstance(x, int) else np.array(x, copy=True)

    def dirichlet(self, alpha):
        draw = self.draws.pop(0)
        assert draw.shape == np.shape(alpha)
        return draw


def scripted(labels, num_clients, scheme, draws, **kw):
    return partition(np.asarray(labels), num_clients, scheme, rng=ScriptedRng(draws), **kw)


def lists(p):
    return [ix.tolist() for ix in p.client_indices]


def test_dirichlet_full_members_get_no_more():
    # n/N = 4: member 0 reaches its share exactly with class 0 and must get none of class 1
    p = scripted([0] * 4 + [1] * 4, 2, "dirichlet", [[1, 0], [0.5, 0.5]], min_size=0)
    assert lists(p) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_dirichlet_shares_are_renormalised_over_the_open_members():
    # member 0 is full after class 0; the draw 0.2/0.4/0.4 for class 1 becomes 0/0.5/0.5
    labels = [0] * 6 + [1] * 6
    p = scripted(labels, 3, "dirichlet", [[1, 0, 0], [0.2, 0.4, 0.4]], min_size=0)
    assert lists(p) == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_dirichlet_unreachable_min_size_message_in_full():
    with pytest.raises(ValueError) as err:
        scripted([0] * 4 + [1] * 4, 2, "dirichlet", [[1, 0], [1, 0]], min_size=5, max_tries=1)
    assert str(err.value) == (
        "dirichlet: min_size=5 unreachable, no draw in 1 tries gave every member that many "
        "samples; use a larger alpha, fewer members or a smaller min_size"
    )


@pytest.mark.parametrize("draw", [[1.0, 0.0, 0.0], [np.nan] * 3])
def test_dirichlet_no_mass_left_splits_evenly_among_open_members(draw):
    # class 0 fills member 0; the draw for class 1 has no mass (or NaN) on members 1 and 2:
    # the class is split evenly between them, never handed to the full member 0
    labels = [0] * 6 + [1] * 6
    p = scripted(labels, 3, "dirichlet", [[1, 0, 0], draw], min_size=0)
    assert lists(p) == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_dirichlet_min_size_is_inclusive_and_one_try_is_allowed():
    p = scripted([0] * 4 + [1] * 4, 2, "dirichlet", [[1, 0], [0, 1]], min_size=4, max_tries=1)
    assert p.sizes().tolist() == [4, 4]
    with pytest.raises(ValueError, match="no draw in 1 tries"):
        scripted([0] * 4 + [1] * 4, 2, "dirichlet", [[1, 0], [0, 1]], min_size=5, max_tries=1)


def test_dirichlet_redraws_until_min_size_holds():
    draws = [[1, 0], [1, 0], [1, 0], [0, 1]]  # first try leaves member 1 empty
    p = scripted([0] * 4 + [1] * 4, 2, "dirichlet", draws, min_size=4, max_tries=2)
    assert p.sizes().tolist() == [4, 4]


def test_quantity_rounds_by_largest_remainder():
    # spare 7 split 0.5/0.3/0.2 = 3.5/2.1/1.4: floors 3/2/1, the one left goes to member 0
    p = scripted(np.zeros(10, int), 3, "quantity", [[0.5, 0.3, 0.2]], min_size=1)
    assert p.sizes().tolist() == [5, 3, 2]
    assert lists(p) == [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9]]


def test_quantity_ties_go_to_the_lower_member_id():
    p = scripted(np.zeros(60, int), 40, "quantity", [np.full(40, 1 / 40)], min_size=1)
    assert p.sizes().tolist() == [2] * 20 + [1] * 20


def test_quantity_ties_among_mixed_remainders_go_to_the_lower_member_id():
    # remainders 3/4, 1/2 and 1/4; 9 extras: all six 3/4s, then the first three 1/2s by id
    # (an unstable sort picks other 1/2s here)
    quarters = np.array([3, 1, 2, 3, 3, 2, 2, 2, 1, 1, 2, 3, 3, 3, 1, 1, 3])
    p = scripted(np.zeros(26, int), 17, "quantity", [quarters / 4], min_size=1)
    extra = [1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1]
    assert p.sizes().tolist() == [1 + e for e in extra]


def test_quantity_normalises_the_draw():
    p = scripted(np.zeros(10, int), 2, "quantity", [[1.0, 3.0]], min_size=0)
    assert p.sizes().tolist() == [3, 7]


@pytest.mark.parametrize("draw", [[np.nan, np.nan], [0.0, 0.0], [np.inf, 1.0]])
def test_quantity_degenerate_draw_falls_back_to_equal_shares(draw):
    p = scripted(np.zeros(10, int), 2, "quantity", [draw], min_size=1)
    assert p.sizes().tolist() == [5, 5]


def test_quantity_min_size_may_use_every_sample():
    p = split("quantity", labels=LABELS[:80], num_clients=8, min_size=10)
    assert p.sizes().tolist() == [10] * 8


def test_homogeneous_extras_go_round_robin_from_member_0():
    p = partition(np.array([0] * 5 + [1] * 4), 3, "homogeneous", rng=np.random.default_rng(0))
    # class 0: 2, 2, 1 (extras to 0, 1); class 1: 2, 1, 1 starting at member 2 -> 1, 1, 2
    assert p.sizes().tolist() == [3, 3, 3]
    assert p.class_counts(np.array([0] * 5 + [1] * 4), 2).tolist() == [[2, 1], [2, 1], [1, 2]]


def test_label_k_all_classes_and_empty_members_keep_int_indices():
    p = split("label_k", num_clients=4, k=C)
    assert (p.class_counts(LABELS, C) > 0).all()
    # class 0 has one sample for its two holders (members 0 and 2): one of them gets nothing
    p = partition(np.array([0, 1, 1, 1]), 3, "label_k", k=1, rng=np.random.default_rng(0))
    assert sorted(p.sizes().tolist()) == [0, 1, 3]
    assert all(ix.dtype == np.int64 for ix in p.client_indices)


def test_groups_boundaries():
    p = partition(
        np.zeros(4, int), 4, "groups", rng=np.random.default_rng(0), groups=np.array([0, 0, 1, 1])
    )
    assert p.sizes().tolist() == [1, 1, 1, 1]  # a group with exactly as many samples as members
    with pytest.raises(ValueError, match=r"^groups: group 0 has 2 samples for 3 members$"):
        partition(
            np.zeros(6, int),
            5,
            "groups",
            rng=np.random.default_rng(0),
            groups=np.array([0, 0, 1, 1, 1, 1]),
        )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_one_member_gets_everything(scheme):
    kw = {"groups": np.zeros(N, int)} if scheme == "groups" else {}
    p = split(scheme, num_clients=1, k=1, **kw)
    assert lists(p) == [list(range(N))]


def test_as_many_members_as_samples_and_min_size_zero():
    p = split("iid", labels=LABELS[:8], num_clients=8)
    assert p.sizes().tolist() == [1] * 8
    p = split("quantity", num_clients=5, min_size=0)
    assert p.sizes().sum() == N
    p = split("dirichlet", num_clients=5, min_size=0, max_tries=1)
    assert p.sizes().sum() == N


def test_defaults_are_the_documented_ones():
    explicit = {"alpha": 0.5, "beta": 0.5, "k": 2, "min_size": 10, "max_tries": 1000}
    for scheme in ("dirichlet", "quantity", "label_k"):
        assert same(split(scheme, groups=None), split(scheme, groups=None, **explicit)), scheme
    with pytest.raises(ValueError, match="no draw in 1000 tries"):
        partition(
            LABELS[:100], 8, "dirichlet", rng=np.random.default_rng(0), alpha=0.01, min_size=12
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"labels": LABELS - 1}, "labels must be non-negative class ids"),
        (
            {"scheme": "zipf"},
            "unknown partition scheme 'zipf'; choose one of iid, homogeneous, "
            "dirichlet, quantity, label_k, groups",
        ),
        ({"num_clients": 0}, "num_clients must be >= 1, got 0"),
        ({"num_clients": N + 1}, f"cannot split {N} samples among {N + 1} members"),
        ({"beta": 0.0}, "alpha and beta must be > 0, got alpha=0.5, beta=0.0"),
        ({"min_size": -1}, "min_size must be >= 0, got -1"),
        ({"max_tries": 0}, "max_tries must be >= 1, got 0"),
        (
            {"scheme": "groups", "groups": None},
            "the groups scheme needs a group id per sample (this dataset has none)",
        ),
        ({"scheme": "label_k", "k": 11}, "label_k: k must be in [1, 10], got 11"),
        (
            {"scheme": "quantity", "min_size": 300},
            f"quantity: 8 members x min_size 300 exceed {N} samples",
        ),
    ],
)
def test_error_messages_in_full(kw, message):
    kw = {"labels": LABELS, "num_clients": 8, "scheme": "iid", "groups": GROUPS, **kw}
    with pytest.raises(ValueError) as err:
        partition(
            kw.pop("labels"),
            kw.pop("num_clients"),
            kw.pop("scheme"),
            rng=np.random.default_rng(0),
            **kw,
        )
    assert str(err.value) == message


def test_validate_edge_cases():
    Partition(()).validate(0)
    with pytest.raises(ValueError, match="0 indices repeated, 1 missing"):
        Partition(()).validate(1)
    with pytest.raises(ValueError, match=r"^partition indices must be integers, got float64$"):
        Partition((np.array([0.0, 1.0]),)).validate(2)
    with pytest.raises(ValueError, match=r"^partition has indices outside 0\.\.2$"):
        Partition((np.array([0, 3]),)).validate(3)
    with pytest.raises(ValueError, match="0 indices repeated, 1 missing"):
        Partition((np.array([0, 1]),)).validate(3)  # the last index missing
    assert Partition((np.array([0, 1]), np.array([2]))).sizes().dtype == np.int64


def test_report_table_layout():
    labels = np.array([0, 0, 1, 2])
    p = Partition((np.array([0, 1]), np.array([2, 3])))
    assert str(p.report_table(labels, 3).title) == "partition"
    table = p.report_table(labels, 3, title="t")
    assert str(table.title) == "t"
    assert [str(c.header) for c in table.columns] == ["member", "samples", "classes", "0", "1", "2"]
    assert all(c.justify == "right" for c in table.columns)
    assert [c.style for c in table.columns[3:]] == ["dim"] * 3
    cells = [list(map(str, c._cells)) for c in table.columns]
    assert list(zip(*cells, strict=True)) == [
        ("0", "2", "1", "2", "0", "0"),
        ("1", "2", "2", "0", "1", "1"),
        ("all", "4", "3", "2", "1", "1"),
    ]
    assert table.rows[-1].style == "bold" and table.rows[0].style is None
    absent = p.report_table(labels, 4)  # class 3 has no sample anywhere
    assert [str(c._cells[-1]) for c in absent.columns] == ["all", "4", "3", "2", "1", "1", "0"]
    # per-class columns up to 20 classes, none beyond
    many = Partition((np.arange(4),))
    assert len(many.report_table(np.arange(4), 20).columns) == 23
    assert len(many.report_table(np.arange(4), 21).columns) == 3
    row = [str(c._cells[0]) for c in many.report_table(np.arange(4), 21).columns]
    assert row == ["0", "4", "4"]


def test_dirichlet_rounding_never_feeds_a_full_last_member():
    # found by Hypothesis: shares summing to 1 - 1e-16 before the last, already full, member
    # used to leave that member one sample of class 1
    labels = np.array([0] * 21 + [1] * 10)
    p = partition(labels, 10, "dirichlet", rng=np.random.default_rng(1), alpha=3.0, min_size=0)
    counts = p.class_counts(labels, 2)
    full = counts[:, 0] >= len(labels) / 10
    assert full[-1] and (counts[full, 1] == 0).all()
