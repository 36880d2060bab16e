"""FedAvg's, FedProx's and DP-FedAvg's options: each adds only its own fields to its base."""

from __future__ import annotations

from pydantic import Field, model_validator

import consortium.privacy as privacy
from consortium.algorithms.base.config import AveragingConfig


class FedAvgConfig(AveragingConfig):
    """Federated averaging (McMahan et al., AISTATS 2017).

    The shared fields (``rounds``, ``clients_per_round``, ``eval_every``, ``local``) come from an
    experiment's ``[federation]`` and ``[train]`` tables; the rest is the ``[fedavg]`` table
    (``weighted``, ``evaluate_clients`` and ``aggregation`` come from the averaging base).
    """

    server_momentum: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="FedAvgM's server momentum beta (0: plain FedAvg); steadies training when "
        "members drop out under label skew (docs/experiments.md)",
    )
    secure_aggregation: bool = Field(
        False,
        description="the server gets only the (weighted) mean of the members' models, never "
        "one member's (SecAgg+ on a Flower federation; in process the same mean)",
    )

    @model_validator(mode="after")
    def _sum_only(self) -> FedAvgConfig:
        if self.secure_aggregation and self.aggregation.robust:
            raise ValueError(
                "secure_aggregation: the server sees only the sum of the updates, so it cannot "
                f"apply the {self.aggregation.rule!r} rule or clip each update; use rule = "
                "'mean' without clip_norm"
            )
        return self


class FedProxConfig(FedAvgConfig):
    """FedProx (Li et al., MLSys 2020): FedAvg whose members add (mu/2)·||w - w_global||²."""

    prox_mu: float = Field(0.01, ge=0, le=1e6, description="proximal coefficient mu")


class DPFedAvgConfig(FedAvgConfig):
    """DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018): member-level differential
    privacy. Members take part by Poisson sampling at rate ``clients_per_round / members``;
    the server clips each update to ``clip_norm``, adds Gaussian noise of std
    ``noise_multiplier · clip_norm`` to their sum and divides by the expected number of
    members; Opacus's RDP accountant reports ε at ``delta`` after every round.
    """

    weighted: bool = Field(
        False, description="must stay false: every member counts once (the privacy bound)"
    )
    clip_norm: float = Field(1.0, gt=0, le=1e6, description="bound on each update's L2 norm, C")
    noise_multiplier: float | None = Field(
        None,
        gt=0,
        le=1e4,
        description="noise std over clip_norm, z (default 1.0; or set target_epsilon)",
    )
    target_epsilon: float | None = Field(
        None, gt=0, le=1e4, description="choose z so that the whole run spends this epsilon"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the reported epsilon")
    reproducible: bool = Field(
        False,
        description="draw the noise and the members from the run seed (experiments only: "
        "whoever knows the seed can take the noise out)",
    )

    @model_validator(mode="after")
    def _check_privacy(self) -> DPFedAvgConfig:
        if self.weighted:
            raise ValueError("weighted: DP-FedAvg counts every member once; set weighted = false")
        if self.aggregation.robust:
            raise ValueError("aggregation: DP-FedAvg's noise is calibrated to a clipped mean")
        if self.secure_aggregation:
            raise ValueError("secure_aggregation: DP-FedAvg's server clips each update itself")
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError("set noise_multiplier or target_epsilon, not both")
        if not privacy.available():
            raise ValueError(privacy.INSTALL_HINT)
        return self
