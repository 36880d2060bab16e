"""The round every federated method shares, written once, with hooks for what differs.

Flower's strategies and pfl-research's algorithms read the same way: a template runs the loop
and calls hooks; a variant overrides a hook (FedProx overrides ``configure_train`` only), never
the loop. One round here is:

1. :meth:`~FederatedWorkflow.sample` the members of the round (seeded by run seed and round);
2. :meth:`~FederatedWorkflow.configure_train`: one message per sampled member;
3. :meth:`~FederatedWorkflow.exchange`: send them, every reply checked by the grid (and
   against :meth:`~FederatedWorkflow.expect`), then
   :meth:`~FederatedWorkflow.aggregate_train`: the replies become the new server state (a
   method that needs only their sum may ask the grid for that alone: secure aggregation);
4. :meth:`~FederatedWorkflow.evaluate` when the schedule says so (``eval_every`` and the last
   round).

The workflow changes its state only in step 3, after ``send`` returned, so a round skipped for
too few replies leaves it as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from consortium.algorithms.base.config import AveragingConfig, FederatedConfig
from consortium.algorithms.base.supervised import (
    ModelFn,
    ServerEvaluator,
    final_summary,
    initial_arrays,
)
from consortium.core.aggregation import Update
from consortium.core.grid import Grid, TooFewReplies
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow

C = TypeVar("C", bound=FederatedConfig)
Expect = ReplySpec | Callable[[int], ReplySpec] | None


class FederatedWorkflow(Workflow, Generic[C]):
    """Template of a round-based method; subclasses implement the two middle hooks."""

    progress_keys = ("test_accuracy", "train_loss")

    def __init__(self, config: C) -> None:
        self.config = config
        self.num_rounds = config.rounds

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        sampled = self.sample(grid, rnd)
        messages = self.configure_train(grid, rnd, sampled)
        metrics: dict[str, Any] = {"sampled": sampled}
        metrics.update(self.exchange(grid, rnd, messages))
        if self.config.evaluates(rnd):
            metrics.update(self.evaluate(rnd))
        return metrics

    # -- hooks ----------------------------------------------------------------------------

    def sample(self, grid: Grid, rnd: int) -> list[int]:
        """The members of round ``rnd``."""
        return grid.sample(self.config.clients_per_round)

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        """The message each sampled member gets."""
        raise NotImplementedError

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        """What a valid reply holds: by default the arrays the member was sent, same shapes."""
        specs = {c: ReplySpec.like(m.arrays) for c, m in messages.items()}
        return lambda c: specs[c]

    def exchange(self, grid: Grid, rnd: int, messages: Mapping[int, Message]) -> dict[str, Any]:
        """Send the round's messages and fold the valid replies in (:meth:`aggregate_train`)."""
        replies = grid.send(messages, expect=self.expect(messages))
        return self.aggregate_train(grid, rnd, replies)

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        """Fold the valid replies into the server's state; returns the round's metrics."""
        raise NotImplementedError

    def evaluate(self, rnd: int) -> dict[str, Any]:
        """Metrics of the server's model after round ``rnd`` (when the schedule says so)."""
        return {}


# -- helpers every method uses --------------------------------------------------------------


def updates_from(replies: Mapping[int, Message], weighted: bool = True) -> list[Update]:
    """One :class:`Update` per reply, weighted by its ``num_examples`` (or equally)."""
    return [
        Update(r.arrays, float(r.metrics.get("num_examples", 0.0)) if weighted else 1.0)
        for r in replies.values()
    ]


def weighted_metric(replies: Mapping[int, Message], key: str) -> float | None:
    """Sample-weighted mean of a reply metric (weights: ``num_examples``)."""
    pairs = [
        (r.metrics[key], r.metrics.get("num_examples", 1.0))
        for r in replies.values()
        if key in r.metrics
    ]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total > 0 else None


def send_chunked(
    grid: Grid,
    messages: Mapping[int, Message],
    chunk_size: int,
    expect: Expect = None,
    *,
    tolerate_short: bool = False,
) -> dict[int, Message]:
    """Send in chunks of ``chunk_size`` members, so at most that many replies (models) are held
    at once; ``tolerate_short`` keeps going when one chunk falls short of ``min_replies``."""
    ids = sorted(messages)
    out: dict[int, Message] = {}
    for start in range(0, len(ids), chunk_size):
        chunk = {c: messages[c] for c in ids[start : start + chunk_size]}
        try:
            out.update(grid.send(chunk, expect=expect))
        except TooFewReplies:
            if not tolerate_short:
                raise
    return out


def broadcast(message: Message, members: Sequence[int]) -> dict[int, Message]:
    """The same message to every member of ``members`` (arrays shared, not copied)."""
    return dict.fromkeys(members, message)


class ModelState:
    """Mixin of workflows whose state is one set of model arrays, ``self.weights``."""

    weights: Arrays

    def final_arrays(self) -> Arrays:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"])


class Averaging:
    """Mixin: the server averages full models sent back by members (FedAvg's step).

    Needs ``self.weights`` and a config with ``weighted`` and ``aggregation`` (an
    :class:`~consortium.algorithms.base.config.AveragingConfig`). Hooks: :meth:`aggregate`
    (the configured rule: the weighted mean or a robust one) and :meth:`observe` (look at the
    round before the new model is taken, e.g. to track contributions).
    """

    weights: Arrays
    config: Any
    #: The largest DP-SGD ε a member reported so far (``None``: members train without it).
    dp_sgd_epsilon: float | None = None

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        return ReplySpec.like(self.weights)

    def aggregate(self, updates: Sequence[Update]) -> Arrays:
        """The new global model from this round's updates, by the configured rule (each entry
        over the updates that cover it; see ``AggregationOptions``)."""
        return self.config.aggregation.aggregate(updates, self.weights)

    def observe(self, replies: Mapping[int, Message], new: Arrays) -> dict[str, Any]:
        """Metrics of the round, computed before ``new`` replaces the model."""
        return {}

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        updates = updates_from(replies, self.config.weighted)
        if sum(u.weight for u in updates) <= 0:
            return {}
        new = self.aggregate(updates)
        metrics = self.observe(replies, new)
        self.weights = new
        metrics["train_loss"] = weighted_metric(replies, "train_loss")
        metrics.update(self.track_dp_sgd(replies))
        return metrics

    def track_dp_sgd(self, replies: Mapping[int, Message]) -> dict[str, float]:
        """The round's largest member ε under DP-SGD (the weakest member guarantee), kept."""
        reported = [
            e for e in (r.metrics.get("dp_sgd_epsilon") for r in replies.values()) if e is not None
        ]
        if not reported:
            return {}
        self.dp_sgd_epsilon = max(self.dp_sgd_epsilon or 0.0, *reported)
        return {"dp_sgd_epsilon": max(reported)}


A = TypeVar("A", bound=AveragingConfig)


class GlobalModelWorkflow(Averaging, ModelState, FederatedWorkflow[A], Generic[A]):
    """A method whose server keeps one global model and averages members' models: FedAvg and
    its relatives override :meth:`configure_train` (what members train with) and little else.

    Parameters
    ----------
    config
        Its options (an :class:`~consortium.algorithms.base.config.AveragingConfig`).
    model_fn
        Builds the (untrained) model; the initial weights come from the run seed.
    test_x, test_y
        The server's test set for the per-round global accuracy (may be empty).
    """

    def __init__(
        self,
        config: A,
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

    def evaluate(self, rnd: int) -> dict[str, Any]:
        return self.evaluator(self.weights)

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary = final_summary(self.evaluator, grid, self.weights, self.config.evaluate_clients)
        if self.dp_sgd_epsilon is not None:
            summary.update(
                dp_sgd_epsilon=self.dp_sgd_epsilon, dp_sgd_delta=self.config.local.dp_sgd_delta
            )
        return summary

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.dp_sgd_epsilon is not None:
            state["dp_sgd_epsilon"] = self.dp_sgd_epsilon
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.dp_sgd_epsilon = state.get("dp_sgd_epsilon")
