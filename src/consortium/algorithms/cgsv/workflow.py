"""CGSV as a workflow: reputations from cosine similarity, rewards as masked aggregates.

Xu, Lyu, Ma, Miao, Foo, Low. *Gradient-Driven Rewards to Guarantee Fairness in Collaborative
Machine Learning.* NeurIPS 2021. As implemented in the authors' code (papers.md 1(d)):

1. each member trains a copy of its own model and sends the update, rescaled to norm Γ;
2. the server aggregates ``Δ = Σ_j w_j Δ_j`` (data-size weights in the first round, the
   reputations ``r`` after) and adds ``Δ`` to the server model;
3. ``φ_i = cos(Δ_i, Δ)``; ``r_i ← α·r_i + (1 − α)·φ_i``, clamped at 1e-3, normalised;
4. member ``i`` adds the aggregate restricted to its ``q_i`` share of largest entries per layer,
   ``q_i = tanh(β·r_i) / max_j tanh(β·r_j)``, to its own model.

A member's reward is its own final model; the server model is ``test_accuracy``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from consortium.algorithms.aequa.contribution import cosine
from consortium.algorithms.cgsv.base import OwnModelWorkflow
from consortium.algorithms.cgsv.config import CGSVConfig
from consortium.algorithms.cgsv.rules import masked_reward, reward_fractions, update_reputations
from consortium.algorithms.supervised import ModelFn
from consortium.core.aggregation import Update, weighted_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays


class CGSV(OwnModelWorkflow):
    """CGSV baseline; members run :func:`~consortium.algorithms.cgsv.cgsv_client_app`."""

    name = "cgsv"

    def __init__(
        self,
        config: CGSVConfig,
        model_fn: ModelFn,
        val_x: np.ndarray,
        val_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        device: str = "auto",
        standalone_cache: MutableMapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            rounds=config.rounds,
            clients_per_round=config.clients_per_round,
            local=config.local,
            contribution=config.contribution,
            needs_standalone=config.needs_standalone,
            gamma=config.gamma,
            eval_every=config.eval_every,
            chunk_size=config.chunk_size,
            model_fn=model_fn,
            val_x=val_x,
            val_y=val_y,
            test_x=test_x,
            test_y=test_y,
            device=device,
            standalone_cache=standalone_cache,
        )
        self.config = config
        self.reputations: dict[int, float] = {}

    def rewards(
        self,
        grid: Grid,
        rnd: int,
        deltas: Mapping[int, Arrays],
        sizes: Mapping[int, float],
    ) -> tuple[Arrays, dict[int, Arrays], dict[str, Any]]:
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
