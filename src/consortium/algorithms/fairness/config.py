"""Options every fair-reward method shares: how contributions are assessed, and the standalone
phase (members training alone: IPR's baseline and a contribution measure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from consortium.algorithms.base.config import FederatedConfig
from consortium.config import ConfigError

if TYPE_CHECKING:
    from consortium.algorithms.registry import Check, MethodContext

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

    def validation_use(self) -> str | None:
        """What the rewards fit on the server's validation split (``None``: nothing).

        A method that fits its allocation on held-out data must never fall back to the test
        set it is judged on, so such a method refuses to run without that split.
        """
        return None


def check_validation_split(method: str, config: FairRewardConfig, val_fraction: float) -> None:
    """Refuse, in one line, a method that fits its rewards on validation data it will not have."""
    use = config.validation_use()
    if use is not None and not val_fraction > 0:
        raise ValueError(
            f"{method}: {use} on the server's validation split, never on the test set: set "
            "data.server_val_fraction (e.g. 0.1)"
        )


def server_validation_check(method: str, then: Check | None = None) -> Check:
    """A method's check (``MethodSpec.check``): ``then`` (what else the method needs), and a
    server validation split in the data whenever the method's options fit rewards on one."""

    def check(ctx: MethodContext, config: FairRewardConfig) -> None:
        if then is not None:
            then(ctx, config)
        held = len(getattr(ctx.data, "val_y", ()))
        try:
            check_validation_split(method, config, 1.0 if held else 0.0)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    return check


class OwnModelConfig(FairRewardConfig):
    """Options of the baselines whose members keep their own models (CGSV, IAFL)."""

    gamma: float = Field(
        0.0, ge=0, description="norm updates are rescaled to before sharing (0: off)"
    )
