"""IAFL as a workflow: every member gets a share of the others' updates that grows with its
contribution.

Wu, Amiri, Raskar, Low. *Incentive-Aware Federated Learning with Training-Time Model
Rewards.* ICLR 2024. As implemented in the authors' code (docs/methods/aequa.md):

1. (with probability ``q``) a member's model is reset to the server model;
2. each member trains a copy of its own model and sends the update;
3. member ``i`` adds the average of its own update and ``⌈γ_i^(1−κ)·(|joined| − 1)⌉`` random
   others' to its model, ``γ_i = min(p_i / max_j p_j, 1)``;
4. the server model adds the reward of the top contributor (its reward set).

A member's reward is its own final model; the server model is ``test_accuracy``.
"""

from __future__ import annotations

from typing import Any

from consortium.algorithms.fairness.own_model import Deltas, OwnModelWorkflow, Rewards, Sizes
from consortium.algorithms.iafl.config import IAFLConfig
from consortium.algorithms.iafl.rules import average, reward_proportions, reward_set
from consortium.core.grid import Grid
from consortium.core.message import Message
from consortium.core.sampling import rng_for


class IAFL(OwnModelWorkflow[IAFLConfig]):
    """IAFL baseline; members run
    :func:`~consortium.algorithms.fairness.own_model_client.own_model_client_app`."""

    name = "iafl"

    def proportions(self, grid: Grid) -> dict[int, float]:
        """``γ_i^(1−κ)`` from the contributions (fixed for the run)."""
        p = self.static_contributions(grid)
        assert p is not None  # IAFLConfig rejects online contributions
        return reward_proportions(p, self.config.kappa)

    def train_message(self, grid: Grid, cid: int, rnd: int) -> Message:
        """Round message; with probability ``q`` the member restarts from the server model."""
        msg = super().train_message(grid, cid, rnd)
        reset = rng_for(grid.seed, "iafl-reset", rnd, cid).random() < self.config.q
        if cid in self.initialised and reset:
            msg = Message("own_train", arrays=self.weights, config={**msg.config, "mode": "set"})
        return msg

    def rewards(self, grid: Grid, rnd: int, deltas: Deltas, sizes: Sizes) -> Rewards:
        proportions = self.proportions(grid)
        joined = sorted(deltas)
        sets = {
            c: reward_set(c, joined, proportions[c], rng_for(grid.seed, "iafl", rnd, c))
            for c in grid.client_ids
        }
        top = max(sorted(proportions), key=lambda c: proportions[c])
        member_rewards = {c: average(deltas, s) for c, s in sets.items() if s}
        server = average(deltas, sets[top])
        metrics = {"reward_set_size": {str(c): len(s) for c, s in sets.items()}, "top": top}
        return server, member_rewards, metrics

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary = super().finish(grid)
        summary["reward_proportion"] = {
            str(c): v for c, v in sorted(self.proportions(grid).items())
        }
        return summary
