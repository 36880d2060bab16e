"""Standalone reference: every member trains alone on its own data.

It answers the question every member of a consortium asks first: what would I get without the
others? Fairness metrics (IPR) and every method's headline comparison need it. Each member gets
one message and trains ``rounds × local.epochs`` epochs from the run's common initial model.
Its model is then scored twice: by the member on its own test view, and (in simulation, when
``evaluate_global`` is on) by the server on the global test set, which is where a model that has
only seen a few classes shows what it lacks. Members are processed in chunks so at most
``chunk_size`` models are in memory at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field

from consortium.algorithms.base.config import TrainingConfig
from consortium.algorithms.base.supervised import (
    ModelFn,
    ServerEvaluator,
    client_accuracy_summary,
    initial_arrays,
)
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow


class StandaloneConfig(TrainingConfig):
    """Members alone. ``rounds`` is that of the federated run it is compared with: a member
    trains ``rounds × local.epochs`` epochs in total, the passes FedAvg gives it."""

    evaluate_global: bool = Field(
        True,
        description="members send their model back once so the server scores it on the global "
        "test set (simulation only; dropped right after)",
    )
    chunk_size: int = Field(32, ge=1, description="members per exchange (models held at once)")


class Standalone(Workflow):
    """Each member alone; one round in which every member trains and reports."""

    name = "standalone"
    num_rounds = 1
    progress_keys = ("mean_client_accuracy",)

    def __init__(
        self,
        config: StandaloneConfig,
        model_fn: ModelFn,
        test_x: np.ndarray | None = None,
        test_y: np.ndarray | None = None,
        device: str = "auto",
    ) -> None:
        self.config = config
        self.model_fn = model_fn
        self.evaluator = (
            ServerEvaluator(model_fn, test_x, test_y, device)
            if config.evaluate_global and test_x is not None and test_y is not None
            else None
        )
        self.per_client: dict[int, dict[str, float]] = {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        init = initial_arrays(self.model_fn, grid.seed)
        local = self.config.local.model_copy(
            update={"epochs": self.config.local.epochs * self.config.rounds}
        )
        back = self.evaluator is not None
        msg = Message(
            "train_alone", arrays=init, config={**local.as_config(), "return_model": back}
        )
        spec = ReplySpec.like(init) if back else ReplySpec({})
        ids = grid.client_ids
        per_client: dict[int, dict[str, float]] = {}
        for start in range(0, len(ids), self.config.chunk_size):
            chunk = ids[start : start + self.config.chunk_size]
            replies = grid.send({c: msg for c in chunk}, expect=spec)
            for c, r in replies.items():
                per_client[c] = dict(r.metrics)
                if self.evaluator is not None:
                    per_client[c]["global_test_accuracy"] = self.evaluator(r.arrays)[
                        "test_accuracy"
                    ]
        self.per_client = per_client
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        summary = client_accuracy_summary(self.per_client)
        scores = [
            m["global_test_accuracy"]
            for m in self.per_client.values()
            if "global_test_accuracy" in m
        ]
        if scores:
            # The mean member's standalone model on the global test set.
            summary["test_accuracy"] = float(np.mean(scores))
            summary["client_global_test_accuracy"] = {
                str(c): m["global_test_accuracy"]
                for c, m in sorted(self.per_client.items())
                if "global_test_accuracy" in m
            }
        return summary

    def finish(self, grid: Grid) -> dict[str, Any]:
        return self._summary()

    def final_arrays(self) -> Arrays | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"per_client": self.per_client}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.per_client = dict(state["per_client"])
