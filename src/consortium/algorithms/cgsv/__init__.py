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
from consortium.algorithms.fairness import builder, own_model_client_app, server_validation_check
from consortium.algorithms.registry import MethodSpec, builds_model, register_method

__all__ = [
    "CGSV",
    "CGSVConfig",
    "masked_reward",
    "reward_fractions",
    "top_fraction_mask",
    "update_reputations",
]

register_method(
    MethodSpec(
        "cgsv",
        CGSVConfig,
        builder(CGSV, own_model_client_app),
        "CGSV: cosine reputations, masked rewards",
        report="fairness",
        check=server_validation_check("cgsv", builds_model),
    )
)
