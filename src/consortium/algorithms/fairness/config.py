"""Options every fair-reward method shares: how contributions are assessed, and the standalone
phase (members training alone: IPR's baseline and a contribution measure)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from consortium.algorithms.base.config import FederatedConfig

ContributionKind = Literal["data_size", "standalone", "cgsv", "given"]


class FairRewardConfig(FederatedConfig):
    """Base of Aequa's, CGSV's and IAFL's options (each adds only its own fields)."""

    contribution: ContributionKind = Field(
        "standalone",
        description="how contributions are assessed: data_size | standalone (accuracy alone, "
        "on the server validation split, else own test views) | cgsv (cosine of a member's "
        "update with the aggregate, EMA, online) | given",
    )
    contribution_values: list[float] = Field(
        default_factory=list, description="one value per member for contribution = given"
    )
    contribution_alpha: float = Field(
        0.95, ge=0, lt=1, description="EMA factor of cgsv contributions (bias-corrected)"
    )
    measure_standalone: bool = Field(
        True, description="members train alone once first (IPR; standalone contributions)"
    )
    chunk_size: int = Field(
        32, ge=1, description="members per exchange when models travel (bounds memory)"
    )

    @model_validator(mode="after")
    def _check_given(self) -> FairRewardConfig:
        if self.contribution == "given" and not self.contribution_values:
            raise ValueError("contribution = 'given' needs contribution_values")
        return self

    @property
    def needs_standalone(self) -> bool:
        return self.measure_standalone or self.contribution == "standalone"


class OwnModelConfig(FairRewardConfig):
    """Options of the baselines whose members keep their own models (CGSV, IAFL)."""

    gamma: float = Field(
        0.0, ge=0, description="norm updates are rescaled to before sharing (0: off)"
    )
