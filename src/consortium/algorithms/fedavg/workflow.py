"""FedAvg as a workflow: sample, send the model, average the replies, evaluate; FedProx as the
variant that overrides one hook (what members are told to train with)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from consortium.algorithms.base.supervised import (
    ModelFn,
    ServerEvaluator,
    client_accuracy_summary,
    evaluate_on_clients,
    initial_arrays,
)
from consortium.algorithms.base.workflow import (
    Expect,
    FederatedWorkflow,
    ModelState,
    broadcast,
    updates_from,
    weighted_metric,
)
from consortium.algorithms.fedavg.config import FedAvgConfig, FedProxConfig
from consortium.core.aggregation import Update, weighted_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec


class FedAvg(ModelState, FederatedWorkflow[FedAvgConfig]):
    """Federated averaging (McMahan et al., 2017).

    Members run :func:`~consortium.algorithms.base.supervised.supervised_client_app`'s
    ``train``.

    Parameters
    ----------
    config
        See :class:`FedAvgConfig`.
    model_fn
        Builds the (untrained) model; the initial weights come from the run seed.
    test_x, test_y
        The server's test set for the per-round global accuracy (may be empty).
    """

    name = "fedavg"

    def __init__(
        self,
        config: FedAvgConfig,
        model_fn: ModelFn,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
    ) -> None:
        super().__init__(config)
        self.model_fn = model_fn
        self.evaluator = ServerEvaluator(model_fn, test_x, test_y, device)
        self.weights: Arrays = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.weights = initial_arrays(self.model_fn, grid.seed)
        return {}

    def train_config(self, rnd: int) -> dict[str, Any]:
        """The settings members train with this round (plain FedAvg: no proximal term)."""
        return {**self.config.local.as_config(), "prox_mu": 0.0}

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        msg = Message("train", arrays=self.weights, config=self.train_config(rnd))
        return broadcast(msg, sampled)

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        return ReplySpec.like(self.weights)

    def aggregate(self, updates: Sequence[Update]) -> Arrays:
        """The new global model from this round's updates."""
        return weighted_mean(updates)

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        updates = updates_from(replies, self.config.weighted)
        if sum(u.weight for u in updates) <= 0:
            return {}
        self.weights = self.aggregate(updates)
        return {"train_loss": weighted_metric(replies, "train_loss")}

    def evaluate(self, rnd: int) -> dict[str, Any]:
        return self.evaluator(self.weights)

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary: dict[str, Any] = dict(self.evaluator(self.weights))
        if self.config.evaluate_clients:
            summary.update(client_accuracy_summary(evaluate_on_clients(grid, self.weights)))
        return summary


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg whose members add a proximal term ``prox_mu``."""

    name = "fedprox"
    config: FedProxConfig

    def train_config(self, rnd: int) -> dict[str, Any]:
        return {**self.config.local.as_config(), "prox_mu": self.config.prox_mu}
