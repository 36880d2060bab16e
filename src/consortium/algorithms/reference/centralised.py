"""Centralised reference: one model trained on all members' samples pooled.

The ceiling a federation is measured against. It is a simulation-only reference (pooling is
exactly what members refuse), so the workflow receives the pooled arrays directly; the final
model is still evaluated on each member's test view through ordinary messages so its
per-member accuracies are comparable with the federated methods'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from consortium.algorithms.base.config import TrainingConfig
from consortium.algorithms.base.supervised import (
    ModelFn,
    ScratchModel,
    ServerEvaluator,
    final_summary,
    initial_arrays,
)
from consortium.algorithms.base.workflow import ModelState
from consortium.core.grid import Grid
from consortium.core.message import Arrays
from consortium.core.sampling import derive_seed
from consortium.core.workflow import Workflow
from consortium.models.weights import get_arrays
from consortium.training import train_local


class CentralisedConfig(TrainingConfig):
    """Pooled training: each logged round is ``local.epochs`` passes over the pooled samples."""

    evaluate_clients: bool = Field(True, description="evaluate the final model on member views")


class Centralised(ModelState, Workflow):
    """Pooled training on ``x[indices]``; evaluation on the server test set each round."""

    name = "centralised"
    progress_keys = ("test_accuracy", "train_loss")

    def __init__(
        self,
        config: CentralisedConfig,
        model_fn: ModelFn,
        x: np.ndarray,
        y: np.ndarray,
        indices: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
    ) -> None:
        self.config = config
        self.num_rounds = config.rounds
        self.model_fn = model_fn
        self.x, self.y, self.indices = x, y, np.asarray(indices)
        self.scratch = ScratchModel(model_fn, device)
        self.evaluator = ServerEvaluator(model_fn, test_x, test_y, device)
        self.weights: Arrays = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.weights = initial_arrays(self.model_fn, grid.seed)
        return {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        model = self.scratch.load(self.weights)
        fit = train_local(
            model,
            self.x,
            self.y,
            self.indices,
            self.config.local,
            derive_seed(grid.seed, "centralised", rnd),
            device=self.scratch.device,
        )
        self.weights = get_arrays(model)
        return {"train_loss": fit["train_loss"], **self.evaluator(self.weights)}

    def finish(self, grid: Grid) -> dict[str, Any]:
        return final_summary(self.evaluator, grid, self.weights, self.config.evaluate_clients)
