"""Shared fixture of the FedRA tests: five members of a toy token task on a tiny backbone."""

import types

import numpy as np
import pytest


def _text_federation(per_member: int, train: int):
    from consortium.algorithms.fedra import seeded_lora_model_fn
    from consortium.models.transformer import LoraSettings, tiny_text_classifier

    rng = np.random.default_rng(0)
    x = rng.integers(1, 100, (5 * per_member, 10)).astype(np.int64)
    y = (x[:, 0] > 50).astype(np.int64)
    views = [
        types.SimpleNamespace(
            x=x,
            y=y,
            train_indices=np.arange(i * per_member, i * per_member + train),
            test_indices=np.arange(i * per_member + train, (i + 1) * per_member),
        )
        for i in range(5)
    ]
    model_fn = seeded_lora_model_fn(
        lambda: tiny_text_classifier(2, layers=4), LoraSettings(r=4, alpha=8), 0
    )
    return x, y, views, model_fn


@pytest.fixture(scope="session")
def make_text_federation():
    """``make(per_member, train)`` -> (x, y, member views, LoRA model factory)."""
    return _text_federation
