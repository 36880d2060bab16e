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
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from consortium.algorithms.aequa.config import ContributionConfig
from consortium.algorithms.aequa.contribution import StandaloneResult, static_contributions
from consortium.algorithms.aequa.rewards import reward_summary, setup_phase
from consortium.algorithms.supervised import ModelFn, ServerEvaluator, initial_arrays
from consortium.core.grid import Grid, TooFewReplies
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow
from consortium.training import LocalTrainConfig

log = logging.getLogger("consortium.fairness")


class OwnModelWorkflow(Workflow):
    """Template of a reward baseline in which members keep their own models.

    Subclasses set ``name``, implement :meth:`rewards` and may extend the state.
    """

    progress_keys = ("test_accuracy", "train_loss")

    def __init__(
        self,
        *,
        rounds: int,
        clients_per_round: int | float,
        local: LocalTrainConfig,
        contribution: ContributionConfig,
        needs_standalone: bool,
        gamma: float,
        eval_every: int,
        chunk_size: int,
        model_fn: ModelFn,
        val_x: np.ndarray,
        val_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
        standalone_cache: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.num_rounds = rounds
        self.clients_per_round = clients_per_round
        self.local = local
        self.contribution = contribution
        self.needs_standalone = needs_standalone
        self.gamma = gamma
        self.eval_every = eval_every
        self.chunk_size = chunk_size
        self.model_fn = model_fn
        self.test = ServerEvaluator(model_fn, test_x, test_y, device)
        self.val = ServerEvaluator(model_fn, val_x, val_y, device)
        self.standalone_cache = standalone_cache
        self.weights: Arrays = {}
        self.init: Arrays = {}
        self.initialised: set[int] = set()
        self.standalone: StandaloneResult | None = None
        self.sizes: dict[int, float] | None = None

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.weights = initial_arrays(self.model_fn, grid.seed)
        self.init = dict(self.weights)
        self.standalone, self.sizes = setup_phase(
            grid,
            self.weights,
            self.local,
            self.num_rounds,
            standalone=self.needs_standalone,
            sizes=True,  # every baseline here weights or ranks by data size
            val=_Scorer(self.val),
            test=_Scorer(self.test),
            chunk_size=self.chunk_size,
            cache=self.standalone_cache,
        )
        return {}

    # -- a round ------------------------------------------------------------------------------

    def train_message(self, grid: Grid, cid: int, rnd: int) -> Message:
        """Round message of one member: initialise it first if it has no model yet."""
        config = {**self.local.as_config(), "train": True, "gamma": self.gamma}
        if cid not in self.initialised:
            return Message("own_train", arrays=self.init, config={**config, "mode": "set"})
        return Message("own_train", config={**config, "mode": "keep"})

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        sampled = grid.sample(self.clients_per_round)
        messages = {c: self.train_message(grid, c, rnd) for c in sampled}
        spec = ReplySpec.like({k: v for k, v in self.weights.items() if v.dtype.kind == "f"})
        replies = grid.send(messages, expect=spec)
        # Members that answered hold a model now (a "set" message was applied).
        self.initialised |= {c for c in replies if messages[c].config["mode"] == "set"}
        deltas = {c: r.arrays for c, r in replies.items()}
        sizes = {c: r.metrics.get("num_examples", 0.0) for c, r in replies.items()}
        metrics: dict[str, Any] = {"sampled": sampled}
        if deltas:
            server_delta, member_rewards, extra = self.rewards(grid, rnd, deltas, sizes)
            self.weights = {
                k: (v + server_delta[k]).astype(v.dtype) if k in server_delta else v
                for k, v in self.weights.items()
            }
            metrics.update(extra)
            metrics["reward_delivery"] = self.deliver(grid, member_rewards)
            losses = [
                (r.metrics["train_loss"], r.metrics.get("num_examples", 1.0))
                for r in replies.values()
                if "train_loss" in r.metrics
            ]
            if losses:
                metrics["train_loss"] = sum(v * w for v, w in losses) / max(
                    sum(w for _, w in losses), 1.0
                )
        if rnd % self.eval_every == 0 or rnd == self.num_rounds:
            metrics.update(self.test(self.weights))
        return metrics

    @abstractmethod
    def rewards(
        self,
        grid: Grid,
        rnd: int,
        deltas: Mapping[int, Arrays],
        sizes: Mapping[int, float],
    ) -> tuple[Arrays, dict[int, Arrays], dict[str, Any]]:
        """(server update, reward update per member, metrics) from this round's updates.

        Called once per round after the updates arrived; may update the subclass's state.
        """

    def deliver(self, grid: Grid, rewards: Mapping[int, Arrays]) -> int:
        """Send each initialised member its reward; returns how many applied it."""
        targets = sorted(c for c in rewards if c in self.initialised)
        delivered = 0
        for start in range(0, len(targets), self.chunk_size):
            chunk = targets[start : start + self.chunk_size]
            messages = {
                c: Message("own_reward", arrays=rewards[c], config={"mode": "add"}) for c in chunk
            }
            try:
                delivered += len(grid.send(messages, expect=ReplySpec({})))
            except TooFewReplies as err:  # those that answered did apply theirs
                log.warning("%s: reward delivery fell short: %s", self.name, err)
        return delivered

    # -- finish -------------------------------------------------------------------------------

    def contributions(self, grid: Grid) -> dict[int, float]:
        """The contributions the rewards are judged against (see ``ContributionConfig``)."""
        static = static_contributions(
            self.contribution, grid.num_clients, sizes=self.sizes, standalone=self.standalone
        )
        if static is not None:
            return static
        return self.own_contributions(grid)

    def own_contributions(self, grid: Grid) -> dict[int, float]:
        """The method's own online contribution estimate (``kind = "cgsv"``)."""
        raise ValueError(f"{self.name} has no online contribution estimate; choose another kind")

    def finish(self, grid: Grid) -> dict[str, Any]:
        """Every member evaluates its own final model and sends it back to be scored on the
        server's test set (in chunks; each model is dropped once scored)."""
        msg = Message("own_reward", config={"mode": "keep", "evaluate": True, "return_model": True})
        spec = ReplySpec.like(self.weights, require_all=False)
        own: dict[int, dict[str, float]] = {}
        reward_test: dict[int, float] = {}
        targets = sorted(self.initialised)
        for start in range(0, len(targets), self.chunk_size):
            chunk = targets[start : start + self.chunk_size]
            for cid, reply in grid.send({c: msg for c in chunk}, expect=spec).items():
                own[cid] = dict(reply.metrics)
                if len(self.test.y):
                    full = {**self.weights, **reply.arrays}
                    reward_test[cid] = self.test(full)["test_accuracy"]
        summary: dict[str, Any] = {
            **self.test(self.weights),
            "contribution_kind": self.contribution.kind,
            **reward_summary(self.contributions(grid), reward_test, own, self.standalone),
        }
        return summary

    def final_arrays(self) -> Arrays:
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "init": self.init,
            "initialised": sorted(self.initialised),
            "standalone": None if self.standalone is None else self.standalone.state_dict(),
            "sizes": self.sizes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"])
        self.init = dict(state["init"])
        self.initialised = set(state["initialised"])
        st = state.get("standalone")
        self.standalone = None if st is None else StandaloneResult.from_state(st)
        self.sizes = state.get("sizes")


class _Scorer:
    """Adapts a :class:`ServerEvaluator` to the ``len()`` + ``score(arrays)`` the set-up phase
    expects of its evaluators."""

    def __init__(self, evaluator: ServerEvaluator) -> None:
        self.evaluator = evaluator

    def __len__(self) -> int:
        return len(self.evaluator.y)

    def __call__(self, arrays: Arrays) -> float:
        return float(self.evaluator(arrays, prefix="score")["score_accuracy"])
