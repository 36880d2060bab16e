"""Shared fixtures: tiny synthetic federations that train in milliseconds."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def synthetic_views(num_clients: int = 4, per_client: int = 40, seed: int = 0):
    """Linearly separable 2-class 'images' (1x4x4) split among members as index views."""
    rng = np.random.default_rng(seed)
    n = num_clients * per_client
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    x[:, 0, 0, 0] += np.where(y == 1, 2.0, -2.0)
    views = []
    for c in range(num_clients):
        idx = np.arange(c * per_client, (c + 1) * per_client)
        views.append(
            types.SimpleNamespace(
                x=x,
                y=y,
                train_indices=idx[: per_client * 3 // 4],
                test_indices=idx[per_client * 3 // 4 :],
            )
        )
    return x, y, views


@pytest.fixture
def tiny_federation():
    return synthetic_views()
