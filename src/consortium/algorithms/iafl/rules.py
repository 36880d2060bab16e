"""IAFL's reward rules as pure functions (Wu et al., ICLR 2024; docs/methods/aequa.md; the
authors' ``main_IAFL.py``, read, not copied).

``γ_i = min(p_i / max_j p_j, 1)``; member ``i`` is rewarded with the plain average of its own
update (when it trained this round) and ``⌈γ_i^(1−κ)·(|joined| − 1)⌉`` updates of other
members drawn at random among those that trained; the server model follows the reward set of
the top contributor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from consortium.core.message import Arrays


def reward_proportions(contributions: Mapping[int, float], kappa: float = 0.0) -> dict[int, float]:
    """``γ_i^(1−κ)`` with ``γ_i = min(p_i / max_j p_j, 1)`` (negative ``p`` clip to 0)."""
    if not contributions:
        return {}
    top = max(contributions.values())
    if top <= 0:
        return dict.fromkeys(contributions, 1.0)
    out = {}
    for i, p in contributions.items():
        g = min(max(float(p), 0.0) / top, 1.0)
        out[i] = g ** (1.0 - kappa)
    return out


def reward_size(proportion: float, joined: int) -> int:
    """How many other members' updates a member with ``proportion`` receives."""
    return max(0, math.ceil(round(proportion * (joined - 1), 9)))


def reward_set(
    member: int, joined: Sequence[int], proportion: float, rng: np.random.Generator
) -> list[int]:
    """Members whose updates make member ``member``'s reward (sorted; may be empty)."""
    others = sorted(j for j in joined if j != member)
    k = min(reward_size(proportion, len(joined)), len(others))
    chosen = [int(j) for j in rng.choice(others, size=k, replace=False)] if k else []
    if member in joined:
        chosen.append(member)
    return sorted(chosen)


def average(updates: Mapping[int, Arrays], members: Sequence[int]) -> Arrays:
    """Plain (unweighted) mean of the members' updates, accumulated in float64; empty when
    ``members`` is."""
    if not members:
        return {}
    names = updates[members[0]].keys()
    out: Arrays = {}
    for name in names:
        total = np.zeros(np.shape(updates[members[0]][name]), np.float64)
        for m in members:
            total += updates[m][name]
        out[name] = (total / len(members)).astype(updates[members[0]][name].dtype)
    return out
