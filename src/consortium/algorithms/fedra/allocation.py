"""Which blocks each member trains in a round: FedRA's random allocation matrix and the
fixed allocations of its baselines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from consortium.algorithms.fedra.config import Allocation


def allocate(
    capacities: Sequence[int],
    num_blocks: int,
    rule: Allocation,
    rng: np.random.Generator,
    cover_all_layers: bool = False,
) -> np.ndarray:
    """Boolean matrix (members x blocks): row k marks the blocks member k trains.

    ``random`` draws L_k distinct blocks uniformly per row (FedRA); with ``cover_all_layers``,
    while a block is uncovered a random row is redrawn to include uncovered blocks first.
    """
    caps = [min(int(c), num_blocks) for c in capacities]
    rows = np.zeros((len(caps), num_blocks), bool)
    if rule == "all":
        rows[:] = True
    elif rule == "first":
        for k, c in enumerate(caps):
            rows[k, :c] = True
    elif rule == "first_min":
        rows[:, : min(caps)] = True
    elif rule == "random":
        for k, c in enumerate(caps):
            rows[k, rng.choice(num_blocks, size=c, replace=False)] = True
        if cover_all_layers and sum(caps) >= num_blocks:
            for _ in range(100 * num_blocks):
                if rows.any(0).all():
                    break
                k = int(rng.integers(len(caps)))
                uncovered = np.flatnonzero(~rows.any(0))
                covered = np.flatnonzero(rows.any(0))
                take = list(rng.permutation(uncovered)[: caps[k]])
                if len(take) < caps[k]:
                    take += list(rng.choice(covered, size=caps[k] - len(take), replace=False))
                rows[k] = False
                rows[k, take] = True
            else:
                raise RuntimeError("could not cover every block; capacities too small?")
    else:
        raise ValueError(f"unknown allocation rule {rule!r}")
    return rows
