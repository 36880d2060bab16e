"""FedAvg's and FedProx's options: each adds only its own fields to the shared base."""

from __future__ import annotations

from pydantic import Field

from consortium.algorithms.base.config import FederatedConfig


class FedAvgConfig(FederatedConfig):
    """Federated averaging (McMahan et al., AISTATS 2017).

    The shared fields (``rounds``, ``clients_per_round``, ``eval_every``, ``local``) come from an
    experiment's ``[federation]`` and ``[train]`` tables; the rest is the ``[fedavg]`` table.
    """

    weighted: bool = Field(True, description="weight updates by member sample counts")
    evaluate_clients: bool = Field(True, description="final evaluation on every member's test view")
    server_momentum: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="FedAvgM's server momentum beta (0: plain FedAvg); steadies training when "
        "members drop out under label skew (docs/experiments.md)",
    )


class FedProxConfig(FedAvgConfig):
    """FedProx (Li et al., MLSys 2020): FedAvg whose members add (mu/2)·||w - w_global||²."""

    prox_mu: float = Field(0.01, ge=0, le=1e6, description="proximal coefficient mu")
