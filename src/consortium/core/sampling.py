"""Seeded randomness that does not depend on how a run was interrupted.

Every random choice of a run (which members a round samples, which of them drop out, the batch
order of a member's local epoch) is drawn from a generator derived from the run seed and the
names of the choice (round, member, purpose). No generator carries state from one round to the
next, so a run resumed from a checkpoint draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def _as_int(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if part < 0:
        raise ValueError(f"seed parts must be non-negative, got {part}")
    return int(part)


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and named parts (stable across Python runs)."""
    seq = np.random.SeedSequence([_as_int(seed), *(_as_int(p) for p in parts)])
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def rng_for(seed: int, *parts: int | str) -> np.random.Generator:
    """A numpy generator for one named random choice of a run."""
    return np.random.default_rng(derive_seed(seed, *parts))


def sample_clients(
    client_ids: Sequence[int], num: int | float, rng: np.random.Generator
) -> list[int]:
    """Sample members without replacement; a float in (0, 1] is a fraction of all members.

    Returns the ids sorted so that the order of replies never depends on the draw order.
    """
    n = len(client_ids)
    if isinstance(num, float):
        if not 0 < num <= 1:
            raise ValueError(f"a sampling fraction must be in (0, 1], got {num}")
        k = max(1, round(num * n))
    else:
        k = int(num)
    if not 1 <= k <= n:
        raise ValueError(f"cannot sample {k} of {n} members")
    if k == n:
        return sorted(int(c) for c in client_ids)
    chosen = rng.choice(n, size=k, replace=False)
    return sorted(int(client_ids[i]) for i in chosen)
