"""Property tests: every scheme's guarantees for random sizes, labels and parameters."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consortium.data import partition

# no deadline and no too-slow check: a loaded machine (or mutmut's workers) must not fail them
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pools(draw, max_n=150, max_classes=6):
    """Random labels (class ids need not be contiguous), a member count and a seed."""
    n = draw(st.integers(1, max_n))
    num_classes = draw(st.integers(1, max_classes))
    ids = draw(
        st.lists(st.integers(0, 40), min_size=num_classes, max_size=num_classes, unique=True)
    )
    labels = np.array(draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n)), np.int64)
    num_clients = draw(st.integers(1, min(n, 12)))
    return labels, num_clients, draw(st.integers(0, 2**32 - 1))


def counts(p, labels):
    """(members, classes present) counts, classes in ascending id order."""
    classes = np.unique(labels)
    return np.array([[int((labels[ix] == c).sum()) for c in classes] for ix in p.client_indices])


def check_cover(p, labels, num_clients, scheme, seed, **kw):
    n = len(labels)
    assert p.num_clients == num_clients
    allidx = np.concatenate(p.client_indices)
    assert np.array_equal(np.sort(allidx), np.arange(n))  # disjoint and complete
    assert all(ix.dtype == np.int64 and np.all(np.diff(ix) > 0) for ix in p.client_indices)
    again = partition(labels, num_clients, scheme, rng=np.random.default_rng(seed), **kw)
    assert all(
        np.array_equal(a, b) for a, b in zip(p.client_indices, again.client_indices, strict=True)
    )


def spread(values):
    return int(np.max(values) - np.min(values))


@FAST
@given(pools())
def test_iid(pool):
    labels, num_clients, seed = pool
    p = partition(labels, num_clients, "iid", rng=np.random.default_rng(seed))
    check_cover(p, labels, num_clients, "iid", seed)
    assert spread(p.sizes()) <= 1


@FAST
@given(pools())
def test_homogeneous(pool):
    labels, num_clients, seed = pool
    p = partition(labels, num_clients, "homogeneous", rng=np.random.default_rng(seed))
    check_cover(p, labels, num_clients, "homogeneous", seed)
    per_class = counts(p, labels)
    assert (per_class.max(0) - per_class.min(0) <= 1).all()
    sizes = p.sizes()
    assert spread(sizes) <= 1
    assert (np.diff(sizes) <= 0).all()  # extras are dealt round-robin from member 0


@FAST
@given(pools(), st.floats(0.05, 50.0), st.integers(0, 12))
def test_dirichlet(pool, alpha, min_size):
    labels, num_clients, seed = pool
    kw = {"alpha": alpha, "min_size": min_size, "max_tries": 20}
    try:
        p = partition(labels, num_clients, "dirichlet", rng=np.random.default_rng(seed), **kw)
    except ValueError as err:
        assert f"min_size={min_size} unreachable" in str(err)
        assert min_size * num_clients > 0
        return
    check_cover(p, labels, num_clients, "dirichlet", seed, **kw)
    assert p.sizes().min() >= min_size
    # the balance rule: once a member holds n/N samples it gets none of the later classes
    per_class = counts(p, labels)
    before = np.cumsum(per_class, axis=1) - per_class
    assert (per_class[before >= len(labels) / num_clients] == 0).all()


@FAST
@given(pools(), st.floats(0.05, 50.0), st.integers(0, 15))
def test_quantity(pool, beta, min_size):
    labels, num_clients, seed = pool
    kw = {"beta": beta, "min_size": min_size}
    if min_size * num_clients > len(labels):
        with pytest.raises(ValueError, match="exceed"):
            partition(labels, num_clients, "quantity", rng=np.random.default_rng(seed), **kw)
        return
    p = partition(labels, num_clients, "quantity", rng=np.random.default_rng(seed), **kw)
    check_cover(p, labels, num_clients, "quantity", seed, **kw)
    assert p.sizes().min() >= min_size


@FAST
@given(pools(), st.integers(1, 7))
def test_label_k(pool, k):
    labels, num_clients, seed = pool
    classes, class_sizes = np.unique(labels, return_counts=True)
    if k > len(classes):
        with pytest.raises(ValueError, match="k must be in"):
            partition(labels, num_clients, "label_k", k=k, rng=np.random.default_rng(seed))
        return
    p = partition(labels, num_clients, "label_k", k=k, rng=np.random.default_rng(seed))
    check_cover(p, labels, num_clients, "label_k", seed, k=k)
    per_class = counts(p, labels)
    held = (per_class > 0).sum(1)
    orphans = max(0, len(classes) - num_clients)  # classes that are nobody's own class
    assert (held <= k + orphans).all()
    for i in range(num_clients):  # member i's own class, when it has enough for every holder
        if class_sizes[i % len(classes)] >= num_clients:
            assert per_class[i, i % len(classes)] > 0
    for col in per_class.T:  # a class is split evenly among the members that got some
        got = col[col > 0]
        assert spread(got) <= 1


@FAST
@given(pools(), st.integers(1, 5), st.data())
def test_groups(pool, num_groups, data):
    labels, num_clients, seed = pool
    n = len(labels)
    groups = np.array(data.draw(st.lists(st.integers(0, num_groups - 1), min_size=n, max_size=n)))
    ids, group_sizes = np.unique(groups, return_counts=True)
    per_group = [num_clients // len(ids) + (g < num_clients % len(ids)) for g in range(len(ids))]
    rng = np.random.default_rng(seed)
    if num_clients < len(ids) or any(c > s for c, s in zip(per_group, group_sizes, strict=True)):
        with pytest.raises(ValueError, match=r"^groups: "):
            partition(labels, num_clients, "groups", rng=rng, groups=groups)
        return
    p = partition(labels, num_clients, "groups", rng=rng, groups=groups)
    check_cover(p, labels, num_clients, "groups", seed, groups=groups)
    member_group = [np.unique(groups[ix]) for ix in p.client_indices]
    assert all(len(g) == 1 for g in member_group)  # nobody straddles two groups
    expected = [gid for gid, c in zip(ids, per_group, strict=True) for _ in range(c)]
    assert [int(g[0]) for g in member_group] == expected
    start = 0
    for c in per_group:  # a group is split evenly among its members
        assert spread(p.sizes()[start : start + c]) <= 1
        start += c
