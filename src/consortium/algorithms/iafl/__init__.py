"""IAFL: incentive-aware FL with training-time model rewards (a fair-reward baseline);
registers the method ``iafl``."""

from __future__ import annotations

from consortium.algorithms.fairness import fair_reward_method, own_model_client_app
from consortium.algorithms.iafl.config import IAFLConfig
from consortium.algorithms.iafl.rules import average, reward_proportions, reward_set, reward_size
from consortium.algorithms.iafl.workflow import IAFL
from consortium.algorithms.registry import builds_model, register_method

__all__ = ["IAFL", "IAFLConfig", "average", "reward_proportions", "reward_set", "reward_size"]

register_method(
    fair_reward_method(
        IAFL,
        IAFLConfig,
        own_model_client_app,
        "IAFL: shares of others' updates as rewards",
        builds_model,
    )
)
