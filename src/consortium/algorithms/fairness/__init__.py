"""What the fair-reward family shares (Aequa, CGSV and IAFL import it, never each other):
contribution assessment, the standalone phase, the fairness summary of rewards, and the
own-model template with its member handlers."""

from consortium.algorithms.fairness.config import (
    ContributionKind,
    FairRewardConfig,
    OwnModelConfig,
    check_validation_split,
    server_validation_check,
)
from consortium.algorithms.fairness.contribution import (
    CosineContribution,
    StandaloneResult,
    collect_data_sizes,
    cosine,
    run_standalone_phase,
    static_contributions,
    subtract,
)
from consortium.algorithms.fairness.own_model import OwnModelWorkflow
from consortium.algorithms.fairness.own_model_client import (
    add_own_model_handlers,
    describe_handler,
    own_model_client_app,
    rescale,
)
from consortium.algorithms.fairness.rewards import reward_summary, setup_phase, standalone_cache
from consortium.algorithms.fairness.workflow import FairRewardWorkflow, builder, fair_reward_method

__all__ = [
    "ContributionKind",
    "CosineContribution",
    "FairRewardConfig",
    "FairRewardWorkflow",
    "OwnModelConfig",
    "OwnModelWorkflow",
    "StandaloneResult",
    "add_own_model_handlers",
    "builder",
    "check_validation_split",
    "collect_data_sizes",
    "cosine",
    "describe_handler",
    "fair_reward_method",
    "own_model_client_app",
    "rescale",
    "reward_summary",
    "run_standalone_phase",
    "server_validation_check",
    "setup_phase",
    "standalone_cache",
    "static_contributions",
    "subtract",
]
