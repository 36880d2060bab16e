"""CGSV as a workflow: reputations from cosine similarity, rewards as masked aggregates.

Xu, Lyu, Ma, Miao, Foo, Low. *Gradient-Driven Rewards to Guarantee Fairness in Collaborative
Machine Learning.* NeurIPS 2021. As implemented in the authors' code (docs/methods/aequa.md):

1. each member trains a copy of its own model and sends the update, rescaled to norm Γ;
2. the server aggregates ``Δ = Σ_j w_j Δ_j`` (data-size weights in the first round, the
   reputations ``r`` after) and adds ``Δ`` to the server model;
3. ``φ_i = cos(Δ_i, Δ)``; ``r_i ← α·r_i + (1 − α)·φ_i``, clamped at 1e-3, normalised;
4. member ``i`` adds the aggregate restricted to its ``q_i`` share of largest entries per layer,
   ``q_i = tanh(β·r_i) / max_j tanh(β·r_j)``, to its own model.

A member's reward is its own final model; the server model is ``test_accuracy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consortium.algorithms.cgsv.config import CGSVConfig
from consortium.algorithms.cgsv.rules import masked_reward, reward_fractions, update_reputations
from consortium.algorithms.fairness import cosine
from consortium.algorithms.fairness.own_model import Deltas, OwnModelWorkflow, Rewards, Sizes
from consortium.core.aggregation import Update, weighted_mean
from consortium.core.grid import Grid


class CGSV(OwnModelWorkflow[CGSVConfig]):
    """CGSV baseline; members run
    :func:`~consortium.algorithms.fairness.own_model_client.own_model_client_app`."""

    name = "cgsv"

    def __init__(self, config: CGSVConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.reputations: dict[int, float] = {}

    def rewards(self, grid: Grid, rnd: int, deltas: Deltas, sizes: Sizes) -> Rewards:
        cfg = self.config
        if self.reputations:
            weights = {c: self.reputations.get(c, 0.0) for c in deltas}
        else:  # first round: FedAvg's data-size weights
            weights = {c: float(sizes.get(c, 0.0)) for c in deltas}
        if sum(weights.values()) <= 0:
            weights = dict.fromkeys(deltas, 1.0)
        # Weighted sum with weights summing to one over the members that answered.
        aggregate = weighted_mean([Update(deltas[c], weights[c]) for c in sorted(deltas)])
        phis = {c: cosine(deltas[c], aggregate) for c in deltas}
        start = self.reputations or dict.fromkeys(grid.client_ids, 0.0)
        self.reputations = update_reputations(start, phis, cfg.alpha)
        fractions = reward_fractions(self.reputations, cfg.beta)
        member_rewards = {c: masked_reward(aggregate, q) for c, q in fractions.items()}
        metrics = {
            "cosine": {str(c): v for c, v in sorted(phis.items())},
            "reputation": {str(c): v for c, v in sorted(self.reputations.items())},
            "reward_fraction": {str(c): v for c, v in sorted(fractions.items())},
        }
        return aggregate, member_rewards, metrics

    def own_contributions(self, grid: Grid) -> dict[int, float]:
        return {c: self.reputations.get(c, 0.0) for c in grid.client_ids}

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary = super().finish(grid)
        summary["reputation"] = {str(c): v for c, v in sorted(self.reputations.items())}
        summary["reward_fraction"] = {
            str(c): v
            for c, v in sorted(reward_fractions(self.reputations, self.config.beta).items())
        }
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reputations": dict(self.reputations)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.reputations = {int(k): float(v) for k, v in state["reputations"].items()}
