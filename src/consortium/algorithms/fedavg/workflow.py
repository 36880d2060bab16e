"""FedAvg as a workflow: sample, send the model, average the replies, evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consortium.algorithms.fedavg.config import FedAvgConfig
from consortium.algorithms.supervised import (
    ModelFn,
    ServerEvaluator,
    client_accuracy_summary,
    evaluate_on_clients,
    initial_arrays,
    weighted_metric,
)
from consortium.core.aggregation import Update, weighted_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow


class FedAvg(Workflow):
    """Federated averaging (McMahan et al., 2017); FedProx when ``config.prox_mu > 0``.

    Members run :func:`~consortium.algorithms.supervised.supervised_client_app`'s ``train``.

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
    progress_keys = ("test_accuracy", "train_loss")

    def __init__(
        self,
        config: FedAvgConfig,
        model_fn: ModelFn,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
    ) -> None:
        self.config = config
        self.num_rounds = config.rounds
        self.model_fn = model_fn
        self.evaluator = ServerEvaluator(model_fn, test_x, test_y, device)
        self.weights: Arrays = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.weights = initial_arrays(self.model_fn, grid.seed)
        return {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        sampled = grid.sample(cfg.clients_per_round)
        msg = Message(
            "train", arrays=self.weights, config={**cfg.local.as_config(), "prox_mu": cfg.prox_mu}
        )
        replies = grid.send({c: msg for c in sampled}, expect=ReplySpec.like(self.weights))
        metrics: dict[str, Any] = {"sampled": sampled}
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0) if cfg.weighted else 1.0)
            for r in replies.values()
        ]
        if sum(u.weight for u in updates) > 0:
            self.weights = weighted_mean(updates)
            metrics["train_loss"] = weighted_metric(replies, "train_loss")
        if rnd % cfg.eval_every == 0 or rnd == self.num_rounds:
            metrics.update(self.evaluator(self.weights))
        return metrics

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary: dict[str, Any] = dict(self.evaluator(self.weights))
        if self.config.evaluate_clients:
            summary.update(client_accuracy_summary(evaluate_on_clients(grid, self.weights)))
        return summary

    def final_arrays(self) -> Arrays:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"])
