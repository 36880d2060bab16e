"""Aequa: fair model rewards via slimmable networks (post-training and training-time);
registers the methods ``aequa`` and ``aequa_training_time``."""

from __future__ import annotations

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
from consortium.algorithms.aequa.config import AequaConfig, AequaTrainingTimeConfig, WidthTraining
from consortium.algorithms.aequa.evaluator import WidthEvaluator
from consortium.algorithms.aequa.training_time import AequaTrainingTime
from consortium.algorithms.aequa.workflow import Aequa
from consortium.algorithms.fairness import fair_reward_method
from consortium.algorithms.registry import MethodContext, register_method
from consortium.config import ConfigError
from consortium.models.slimmable import require_slimmable

__all__ = [
    "Aequa",
    "AequaConfig",
    "AequaTrainingTime",
    "AequaTrainingTimeConfig",
    "Allocation",
    "WidthEvaluator",
    "WidthTraining",
    "accuracy_curve",
    "add_aequa_handlers",
    "aequa_client_app",
    "allocate",
    "monotone",
    "normalise",
    "width_for_target",
    "width_grid",
]


def needs_slimmable(ctx: MethodContext, options: object) -> None:
    """Aequa trains one slimmable model: the experiment's ``[model]`` must be one."""
    try:
        require_slimmable(ctx.model_fn())
    except TypeError as err:
        raise ConfigError(f"model.name: Aequa needs a slimmable model: {err}") from None


for _cls, _config, _what in (
    (Aequa, AequaConfig, "Aequa: slimmable model, width rewards allocated after training"),
    (
        AequaTrainingTime,
        AequaTrainingTimeConfig,
        "Aequa with training-time rewards: members train the width they earned",
    ),
):
    register_method(fair_reward_method(_cls, _config, aequa_client_app, _what, needs_slimmable))
