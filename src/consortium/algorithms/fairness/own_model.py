"""Server side shared by the baselines whose members keep their own models (CGSV, IAFL).

What differs between them is only how a round's updates become the server's model and each
member's reward (:meth:`OwnModelWorkflow.rewards`); the set-up phase, the two exchanges of a
round and the final collection of every member's model are the same, and live here.

A round is two exchanges: ``own_train`` (members train a copy of their model and send the
update) and ``own_reward`` (members add their reward). The workflow commits its own state as
soon as the updates are in; a reward exchange that falls short of ``min_replies`` is logged,
not fatal, because the members that did answer have already applied their rewards.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from consortium.algorithms.base.supervised import ServerEvaluator
from consortium.algorithms.base.workflow import (
    Expect,
    send_chunked,
    weighted_metric,
)
from consortium.algorithms.fairness.config import OwnModelConfig
from consortium.algorithms.fairness.rewards import reward_summary
from consortium.algorithms.fairness.workflow import FairRewardWorkflow
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec

log = logging.getLogger("consortium.fairness")

C = TypeVar("C", bound=OwnModelConfig)
Deltas = Mapping[int, Arrays]
Sizes = Mapping[int, float]
#: (server update, reward update per member, metrics)
Rewards = tuple[Arrays, dict[int, Arrays], dict[str, Any]]


class OwnModelWorkflow(FairRewardWorkflow[C], Generic[C]):
    """Template of a reward baseline in which members keep their own models.

    Subclasses set ``name``, implement :meth:`rewards` and may extend the state. Members run
    :func:`~consortium.algorithms.fairness.own_model_client.own_model_client_app`; the
    parameters are :class:`~consortium.algorithms.fairness.workflow.FairRewardWorkflow`'s.
    """

    def __init__(self, config: C, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.init: Arrays = {}
        self.initialised: set[int] = set()

    def setup(self, grid: Grid) -> dict[str, Any]:
        # Every baseline here weights or ranks by data size.
        self.standalone_phase(grid, sizes=True, val=_Scorer(self.val), test=_Scorer(self.test))
        self.init = dict(self.weights)
        return {}

    # -- a round ------------------------------------------------------------------------------

    def train_message(self, grid: Grid, cid: int, rnd: int) -> Message:
        """Round message of one member: initialise it first if it has no model yet."""
        config = {**self.config.local.as_config(), "train": True, "gamma": self.config.gamma}
        if cid not in self.initialised:
            return Message("own_train", arrays=self.init, config={**config, "mode": "set"})
        return Message("own_train", config={**config, "mode": "keep"})

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        self._round_messages = {c: self.train_message(grid, c, rnd) for c in sampled}
        return self._round_messages

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        return ReplySpec.like({k: v for k, v in self.weights.items() if v.dtype.kind == "f"})

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        messages = self._round_messages
        # Members that answered hold a model now (a "set" message was applied).
        self.initialised |= {c for c in replies if messages[c].config["mode"] == "set"}
        deltas = {c: r.arrays for c, r in replies.items()}
        sizes = {c: r.metrics.get("num_examples", 0.0) for c, r in replies.items()}
        metrics: dict[str, Any] = {}
        if deltas:
            server_delta, member_rewards, extra = self.rewards(grid, rnd, deltas, sizes)
            self.weights = {
                k: (v + server_delta[k]).astype(v.dtype) if k in server_delta else v
                for k, v in self.weights.items()
            }
            metrics.update(extra)
            metrics["reward_delivery"] = self.deliver(grid, member_rewards)
            loss = weighted_metric(replies, "train_loss")
            if loss is not None:
                metrics["train_loss"] = loss
        return metrics

    def evaluate(self, rnd: int) -> dict[str, Any]:
        return self.test(self.weights)

    @abstractmethod
    def rewards(self, grid: Grid, rnd: int, deltas: Deltas, sizes: Sizes) -> Rewards:
        """(server update, reward update per member, metrics) from this round's updates.

        Called once per round after the updates arrived; may update the subclass's state.
        """

    def deliver(self, grid: Grid, rewards: Mapping[int, Arrays]) -> int:
        """Send each initialised member its reward; returns how many applied it."""
        messages = {
            c: Message("own_reward", arrays=rewards[c], config={"mode": "add"})
            for c in sorted(rewards)
            if c in self.initialised
        }
        # A chunk short of min_replies is no reason to stop: those that answered applied theirs
        # (the grid logs every failure and rejection).
        replies = send_chunked(
            grid, messages, self.config.chunk_size, ReplySpec({}), tolerate_short=True
        )
        return len(replies)

    # -- finish -------------------------------------------------------------------------------

    def contributions(self, grid: Grid) -> dict[int, float]:
        """The contributions the rewards are judged against (see ``FairRewardConfig``)."""
        static = self.static_contributions(grid)
        return static if static is not None else self.own_contributions(grid)

    def own_contributions(self, grid: Grid) -> dict[int, float]:
        """The method's own online contribution estimate (``contribution = "cgsv"``)."""
        raise ValueError(f"{self.name} has no online contribution estimate; choose another kind")

    def finish(self, grid: Grid) -> dict[str, Any]:
        """Every member evaluates its own final model and sends it back to be scored on the
        server's test set (in chunks; each model is dropped once scored)."""
        msg = Message("own_reward", config={"mode": "keep", "evaluate": True, "return_model": True})
        spec = ReplySpec.like(self.weights, require_all=False)
        own: dict[int, dict[str, float]] = {}
        reward_test: dict[int, float] = {}
        targets = sorted(self.initialised)
        for start in range(0, len(targets), self.config.chunk_size):
            chunk = targets[start : start + self.config.chunk_size]
            for cid, reply in grid.send({c: msg for c in chunk}, expect=spec).items():
                own[cid] = dict(reply.metrics)
                if len(self.test.y):
                    full = {**self.weights, **reply.arrays}
                    reward_test[cid] = self.test(full)["test_accuracy"]
        summary: dict[str, Any] = {
            **self.test(self.weights),
            "contribution_kind": self.config.contribution,
            **reward_summary(self.contributions(grid), reward_test, own, self.standalone),
        }
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "init": self.init, "initialised": sorted(self.initialised)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.init = dict(state["init"])
        self.initialised = set(state["initialised"])


class _Scorer:
    """Adapts a :class:`ServerEvaluator` to the ``len()`` + ``score(arrays)`` the set-up phase
    expects of its evaluators."""

    def __init__(self, evaluator: ServerEvaluator) -> None:
        self.evaluator = evaluator

    def __len__(self) -> int:
        return len(self.evaluator.y)

    def __call__(self, arrays: Arrays) -> float:
        return float(self.evaluator(arrays, prefix="score")["score_accuracy"])
