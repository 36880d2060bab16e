"""FedAvg as a workflow: send the model, average the replies; FedProx as the variant that
overrides one hook (what members are told to train with); server momentum (FedAvgM) as the
``aggregate`` hook. The round itself, the averaging and the evaluation are the shared
:class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consortium.algorithms.base.workflow import GlobalModelWorkflow, broadcast
from consortium.algorithms.fedavg.config import FedAvgConfig, FedProxConfig
from consortium.core.aggregation import Update
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message


class FedAvg(GlobalModelWorkflow[FedAvgConfig]):
    """Federated averaging (McMahan et al., 2017), with optional server momentum.

    Members run :func:`~consortium.algorithms.base.supervised.supervised_client_app`'s
    ``train``; see :class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow` for the
    parameters. With ``server_momentum`` β > 0 the server step is FedAvgM's (Hsu, Qi and
    Brown, 2019): the move from the current model to the members' average is a
    pseudo-gradient Δ, accumulated as ``v ← β·v + Δ``, and the model moves by ``v``. When
    dropouts leave a round's average to a few members of a skewed federation, the velocity
    keeps the direction of the earlier rounds (docs/experiments.md measures it).
    """

    name = "fedavg"
    velocity: Arrays

    def setup(self, grid: Grid) -> dict[str, Any]:
        self.velocity = {}
        return super().setup(grid)

    def aggregate(self, updates: Sequence[Update]) -> Arrays:
        mean = super().aggregate(updates)
        beta = self.config.server_momentum
        if beta == 0:
            return mean
        new: Arrays = {}
        velocity: Arrays = {}
        for k, w in self.weights.items():
            if w.dtype.kind != "f":  # counters and the like: taken as averaged
                new[k] = mean[k]
                continue
            v = (mean[k] - w) + beta * self.velocity[k] if k in self.velocity else mean[k] - w
            velocity[k] = v.astype(w.dtype)
            new[k] = (w + velocity[k]).astype(w.dtype)
        self.velocity = velocity  # the round's replies were valid: it is committed next
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "velocity": self.velocity}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.velocity = dict(state.get("velocity", {}))

    def train_config(self, rnd: int) -> dict[str, Any]:
        """The settings members train with this round (plain FedAvg: no proximal term)."""
        return {**self.config.local.as_config(), "prox_mu": 0.0}

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        msg = Message("train", arrays=self.weights, config=self.train_config(rnd))
        return broadcast(msg, sampled)


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg whose members add a proximal term ``prox_mu``."""

    name = "fedprox"
    config: FedProxConfig

    def train_config(self, rnd: int) -> dict[str, Any]:
        return {**self.config.local.as_config(), "prox_mu": self.config.prox_mu}
