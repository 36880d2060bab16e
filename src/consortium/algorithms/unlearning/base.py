"""Plumbing every unlearning workflow shares: the model it starts from, a FedAvg step over a
member action, the audit at the end, and what a checkpoint keeps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consortium.algorithms.base.supervised import ModelFn
from consortium.algorithms.base.workflow import weighted_metric
from consortium.algorithms.unlearning.request import UnlearningRequest
from consortium.core.aggregation import Update, weighted_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow
from consortium.training import LocalTrainConfig


class UnlearningWorkflow(Workflow):
    """Base of the method and the baselines.

    Parameters
    ----------
    request
        What to forget.
    model_fn
        Builds the model architecture the weights belong to.
    weights
        The trained model to unlearn from (retraining ignores it and starts from scratch).
    num_classes
        Output classes (forgetting terms need it).

    Verification (forget / retain accuracy, membership inference) is not part of the protocol:
    ``consortium.metrics.unlearning.UnlearningAuditor`` scores the final weights afterwards, so
    the measured time is the method's alone.
    """

    progress_keys = ("train_loss",)

    def __init__(
        self,
        request: UnlearningRequest,
        model_fn: ModelFn,
        weights: Arrays,
        num_classes: int,
    ) -> None:
        self.request = request
        self.model_fn = model_fn
        self.weights: Arrays = {k: np.array(v, copy=True) for k, v in weights.items()}
        self.num_classes = num_classes
        self.extra_state: dict[str, Any] = {}

    def request_message(
        self, kind: str, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any]
    ) -> Message:
        return Message(
            kind,
            arrays={**arrays, **self.request.to_arrays()},
            config={**self.request.to_config(), "num_classes": self.num_classes, **config},
        )

    def fedavg_step(
        self,
        grid: Grid,
        kind: str,
        local: LocalTrainConfig,
        members: list[int] | None = None,
        extra: Mapping[str, np.ndarray] = {},
        with_request: bool = True,
    ) -> dict[str, Any]:
        """Send ``kind`` with the current weights, average full-model replies by sample count
        (``with_request=False``: a plain training message that does not name the request)."""
        ids = grid.client_ids if members is None else members
        if with_request:
            msg = self.request_message(kind, {**self.weights, **extra}, local.as_config())
        else:
            msg = Message(kind, arrays={**self.weights, **extra}, config=local.as_config())
        replies = grid.send({c: msg for c in ids}, expect=ReplySpec.like(self.weights))
        updates = [Update(r.arrays, r.metrics.get("num_examples", 0.0)) for r in replies.values()]
        if sum(u.weight for u in updates) > 0:
            self.weights = weighted_mean([u for u in updates if u.weight > 0])
        return {"train_loss": weighted_metric(replies, "train_loss"), "replies": len(replies)}

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary: dict[str, Any] = {"request": self.request.tag}
        summary.update(self.extra_state.get("summary", {}))
        return summary

    def final_arrays(self) -> Arrays:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "extra": self.extra_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"])
        self.extra_state = dict(state["extra"])
