"""Aequa: fair model rewards via slimmable networks (post-training and training-time)."""

from consortium.algorithms.aequa.allocation import (
    Allocation,
    accuracy_curve,
    allocate,
    monotone,
    normalise,
    width_for_target,
    width_grid,
)
from consortium.algorithms.aequa.client import add_aequa_handlers, aequa_client_app
from consortium.algorithms.aequa.config import AequaConfig, AllocationConfig, ContributionConfig
from consortium.algorithms.aequa.contribution import (
    CosineContribution,
    StandaloneResult,
    collect_data_sizes,
    cosine,
    run_standalone_phase,
    static_contributions,
)
from consortium.algorithms.aequa.training_time import AequaTrainingTime
from consortium.algorithms.aequa.workflow import Aequa

__all__ = [
    "Aequa",
    "AequaConfig",
    "AequaTrainingTime",
    "Allocation",
    "AllocationConfig",
    "ContributionConfig",
    "CosineContribution",
    "StandaloneResult",
    "accuracy_curve",
    "add_aequa_handlers",
    "aequa_client_app",
    "allocate",
    "collect_data_sizes",
    "cosine",
    "monotone",
    "normalise",
    "run_standalone_phase",
    "static_contributions",
    "width_for_target",
    "width_grid",
]
