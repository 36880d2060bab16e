"""IAFL's options (defaults: the authors' code; docs/methods/aequa.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from consortium.algorithms.fairness.config import ContributionKind, OwnModelConfig


class IAFLConfig(OwnModelConfig):
    """Incentive-aware federated learning with training-time model rewards (Wu, Amiri,
    Raskar, Low, ICLR 2024).

    ``contribution`` sets the reward proportions ``p_i`` (and is what the rewards are judged
    against): ``data_size`` (the code's default: shard sizes), ``standalone`` (its documented
    option) or ``given``; ``cgsv`` is not available (it is only known after training).
    ``gamma`` defaults to 0: the IAFL code does not rescale (its clipping is commented out).
    """

    contribution: ContributionKind = Field(
        "data_size", description="data_size | standalone | given (known before training)"
    )
    kappa: float = Field(
        0.0,
        ge=0,
        le=1,
        description="sharing parameter: member i receives ceil(gamma_i^(1-kappa)·(|joined|-1)) "
        "others' updates; 1 gives everyone everything",
    )
    q: float = Field(
        0.0, ge=0, le=1, description="probability of a reset to the server model per round"
    )

    def validation_use(self) -> str | None:
        if self.contribution == "standalone":
            return "the reward shares follow standalone accuracies measured"
        return None

    @model_validator(mode="after")
    def _known_before_training(self) -> IAFLConfig:
        if self.contribution == "cgsv":
            raise ValueError("iafl needs contributions known before training (not cgsv)")
        return self
