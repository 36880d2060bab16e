"""Options every method of a family shares, declared once (pfl-research's ``NNAlgorithmParams``
pattern: a method's config extends a base with only its own fields).

Fields named in :data:`SHARED_FIELDS` belong to the whole experiment: an experiment file sets
them in ``[federation]`` and ``[train]``, and the experiment layer fills them into every method's
config; a method's own TOML section holds everything else. Python users set them directly.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from consortium.config import Options
from consortium.training import LocalTrainConfig

#: Config fields an experiment fills from its shared tables (never from a method's section).
SHARED_FIELDS: frozenset[str] = frozenset({"rounds", "clients_per_round", "eval_every", "local"})


class MethodConfig(Options):
    """Base of every method's options (validated TOML section and Python object in one)."""


class RoundsConfig(Options):
    """How many rounds (the experiment's ``federation.rounds``)."""

    rounds: int = Field(20, ge=1, le=1_000_000, description="communication rounds")


class ScheduleConfig(RoundsConfig):
    """Who takes part each round, and when the server evaluates: shared by a federated
    method's options and the experiment's ``[federation]`` table."""

    clients_per_round: int | float = Field(
        1.0, description="members sampled per round: a count >= 1 or a fraction in (0, 1]"
    )
    eval_every: int = Field(
        1, ge=1, description="evaluate on the server's test set every this many rounds (and last)"
    )

    @model_validator(mode="after")
    def _check_sampling(self) -> ScheduleConfig:
        c = self.clients_per_round
        if isinstance(c, float) and not 0 < c <= 1:
            raise ValueError(f"clients_per_round as a fraction must be in (0, 1], got {c}")
        if isinstance(c, int) and c < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {c}")
        return self

    def evaluates(self, rnd: int) -> bool:
        """Whether round ``rnd`` ends with an evaluation (every ``eval_every``, and the last)."""
        return rnd % self.eval_every == 0 or rnd == self.rounds


class TrainingConfig(MethodConfig, RoundsConfig):
    """A method that trains a model for some rounds with local optimisation."""

    local: LocalTrainConfig = Field(
        default_factory=LocalTrainConfig, description="local optimisation ([train])"
    )


class FederatedConfig(TrainingConfig, ScheduleConfig):
    """A round-based federated method: local training, who takes part, when to evaluate."""


class AveragingConfig(FederatedConfig):
    """A method whose server averages members' models (FedAvg and its relatives)."""

    weighted: bool = Field(True, description="weight updates by member sample counts")
    evaluate_clients: bool = Field(True, description="final evaluation on every member's test view")
