"""FedAvg's and FedProx's options: each adds only its own fields to the shared base."""

from __future__ import annotations

from pydantic import Field

from consortium.algorithms.base.config import AveragingConfig


class FedAvgConfig(AveragingConfig):
    """Federated averaging (McMahan et al., AISTATS 2017).

    The shared fields (``rounds``, ``clients_per_round``, ``eval_every``, ``local``) come from an
    experiment's ``[federation]`` and ``[train]`` tables; the rest is the ``[fedavg]`` table
    (``weighted``, ``evaluate_clients`` and ``aggregation`` come from the averaging base).
    """


class FedProxConfig(FedAvgConfig):
    """FedProx (Li et al., MLSys 2020): FedAvg whose members add (mu/2)·||w - w_global||²."""

    prox_mu: float = Field(0.01, ge=0, le=1e6, description="proximal coefficient mu")
