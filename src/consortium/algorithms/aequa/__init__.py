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
from consortium.algorithms.fairness import standalone_cache
from consortium.algorithms.registry import MethodContext, MethodSpec, register_method
from consortium.core.client import ClientApp

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


def _build(cls: type[Aequa]):  # type: ignore[no-untyped-def]
    def build(ctx: MethodContext, cfg: AequaConfig) -> tuple[Aequa, ClientApp]:
        d = ctx.data
        cache = standalone_cache(ctx.cache, cfg.local, cfg.rounds)
        wf = cls(cfg, ctx.model_fn, d.val_x, d.val_y, d.test_x, d.test_y, ctx.device, cache)
        return wf, aequa_client_app(ctx.model_fn, ctx.device)

    return build


register_method(
    MethodSpec(
        "aequa",
        AequaConfig,
        _build(Aequa),
        "Aequa: slimmable model, width rewards allocated after training",
        report="fairness",
    )
)
register_method(
    MethodSpec(
        "aequa_training_time",
        AequaTrainingTimeConfig,
        _build(AequaTrainingTime),
        "Aequa with training-time rewards: members train the width they earned",
        report="fairness",
    )
)
