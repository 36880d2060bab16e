"""FedAvg as a workflow: send the model, average the replies; FedProx as the variant that
overrides one hook (what members are told to train with). The round itself, the averaging and
the evaluation are the shared :class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow`.
"""

from __future__ import annotations

from typing import Any

from consortium.algorithms.base.workflow import GlobalModelWorkflow, broadcast
from consortium.algorithms.fedavg.config import FedAvgConfig, FedProxConfig
from consortium.core.grid import Grid
from consortium.core.message import Message


class FedAvg(GlobalModelWorkflow[FedAvgConfig]):
    """Federated averaging (McMahan et al., 2017).

    Members run :func:`~consortium.algorithms.base.supervised.supervised_client_app`'s
    ``train``; see :class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow` for the
    parameters.
    """

    name = "fedavg"

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
