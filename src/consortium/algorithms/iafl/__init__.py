"""IAFL: incentive-aware FL with training-time model rewards (a fair-reward baseline)."""

from consortium.algorithms.cgsv import own_model_client_app
from consortium.algorithms.iafl.config import IAFLConfig
from consortium.algorithms.iafl.rules import average, reward_proportions, reward_set, reward_size
from consortium.algorithms.iafl.workflow import IAFL

iafl_client_app = own_model_client_app

__all__ = [
    "IAFL",
    "IAFLConfig",
    "average",
    "iafl_client_app",
    "reward_proportions",
    "reward_set",
    "reward_size",
]
