"""CGSV: cosine-gradient Shapley values and masked-aggregate rewards (a fair-reward baseline);
registers the method ``cgsv``."""

from __future__ import annotations

from consortium.algorithms.cgsv.config import CGSVConfig
from consortium.algorithms.cgsv.rules import (
    masked_reward,
    reward_fractions,
    top_fraction_mask,
    update_reputations,
)
from consortium.algorithms.cgsv.workflow import CGSV
from consortium.algorithms.fairness import fair_reward_method, own_model_client_app
from consortium.algorithms.registry import builds_model, register_method

__all__ = [
    "CGSV",
    "CGSVConfig",
    "masked_reward",
    "reward_fractions",
    "top_fraction_mask",
    "update_reputations",
]

register_method(
    fair_reward_method(
        CGSV,
        CGSVConfig,
        own_model_client_app,
        "CGSV: cosine reputations, masked rewards",
        builds_model,
    )
)
