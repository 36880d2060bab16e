"""CGSV's reward rules as pure functions (Xu, Lyu et al., NeurIPS 2021; docs/methods/aequa.md).

As implemented in the authors' code (read, not copied): updates are rescaled to norm Γ; the
aggregate is their weighted sum (data-size weights in the first round, reputations after);
reputations follow ``r ← α·r + (1 − α)·cos(Δ_i, Δ)``, clamped at 1e-3 and normalised to sum 1;
member ``i`` keeps the fraction ``q_i = tanh(β·r_i) / max_j tanh(β·r_j)`` of the aggregate,
its largest-magnitude entries per layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from consortium.core.message import Arrays

REPUTATION_FLOOR = 1e-3


def update_reputations(
    reputations: Mapping[int, float], phis: Mapping[int, float], alpha: float
) -> dict[int, float]:
    """One round of CGSV's reputation update over the members in ``reputations ∪ phis``.

    Members without a cosine this round (did not reply) keep their previous value before the
    clamp and normalisation; every value is then at least 1e-3 and they sum to 1.
    """
    ids = sorted(set(reputations) | set(phis))
    raw = {}
    for i in ids:
        r = float(reputations.get(i, 0.0))
        raw[i] = alpha * r + (1 - alpha) * float(phis[i]) if i in phis else r
    clamped = {i: max(v, REPUTATION_FLOOR) for i, v in raw.items()}
    total = sum(clamped.values())
    return {i: v / total for i, v in clamped.items()}


def reward_fractions(reputations: Mapping[int, float], beta: float) -> dict[int, float]:
    """``q_i = tanh(β·r_i) / max_j tanh(β·r_j)``: the top member keeps the whole aggregate."""
    if not reputations:
        return {}
    t = {i: math.tanh(beta * float(r)) for i, r in reputations.items()}
    top = max(t.values())
    if top <= 0:
        return dict.fromkeys(t, 1.0)
    return {i: max(v, 0.0) / top for i, v in t.items()}


def top_fraction_mask(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``⌈fraction·n⌉`` largest-magnitude entries (at least none, at
    most all); ties at the threshold are broken by position, so exactly that many are kept."""
    flat = np.abs(np.asarray(values)).ravel()
    k = min(flat.size, max(0, math.ceil(round(fraction * flat.size, 9))))
    mask = np.zeros(flat.size, bool)
    if k > 0:
        # Stable sort on -|v|: the largest first, earlier positions first among equals.
        mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(values))


def masked_reward(aggregate: Mapping[str, np.ndarray], fraction: float) -> Arrays:
    """The aggregate update with all but each layer's top ``fraction`` entries zeroed."""
    return {
        name: np.where(top_fraction_mask(v, fraction), v, np.zeros_like(v))
        for name, v in aggregate.items()
    }
