"""Member views: index arrays into one pool, disjoint train/test, server splits."""

import numpy as np
import pytest
from rich.console import Console

from consortium.data import build_federated_data


def test_views_share_the_pool_and_are_disjoint():
    fd = build_federated_data(
        "digits", num_clients=6, scheme="dirichlet", alpha=0.5, seed=0, server_val_fraction=0.1
    )
    seen = []
    for cid in range(fd.num_clients):
        c = fd.client(cid)
        assert c.x is fd.pool_x and c.y is fd.pool_y  # views, not copies
        assert not set(c.train_indices) & set(c.test_indices)
        assert c.num_test >= 1
        seen += c.train_indices.tolist() + c.test_indices.tolist()
    assert sorted(seen) == list(range(len(fd.pool_y)))  # every pool sample belongs to one member
    total = len(fd.pool_y) + len(fd.val_y) + len(fd.test_y)
    assert total == 1797
    assert len(fd.test_y) == pytest.approx(0.2 * 1797, abs=2)
    assert len(fd.val_y) == pytest.approx(0.1 * (1797 - len(fd.test_y)), abs=2)
    assert np.array_equal(
        fd.pooled_train_indices(),
        np.sort(np.concatenate([fd.client(c).train_indices for c in range(6)])),
    )


def test_seeded_and_max_samples():
    a = build_federated_data("digits", num_clients=4, scheme="iid", seed=3, max_samples=500)
    b = build_federated_data("digits", num_clients=4, scheme="iid", seed=3, max_samples=500)
    assert len(a.pool_y) == 500
    assert all(np.array_equal(a.client_train[i], b.client_train[i]) for i in range(4))


def test_bad_arguments_and_members():
    with pytest.raises(ValueError, match="client_test_fraction"):
        build_federated_data("digits", num_clients=2, client_test_fraction=1.0)
    fd = build_federated_data("digits", num_clients=2)
    with pytest.raises(IndexError, match="no member 5"):
        fd.client(5)


def test_report_table_lists_every_member():
    fd = build_federated_data("digits", num_clients=3, scheme="label_k", k=2)
    console = Console(record=True, width=200)
    console.print(fd.report_table())
    text = console.export_text()
    assert "label_k" in text and "all" in text
    assert len([line for line in text.splitlines() if line.strip().startswith(("│", "┃"))]) >= 5
