"""Options every method of a family shares, declared once (pfl-research's ``NNAlgorithmParams``
pattern: a method's config extends a base with only its own fields).

Fields named in :data:`SHARED_FIELDS` belong to the whole experiment: an experiment file sets
them in ``[federation]`` and ``[train]``, and the experiment layer fills them into every method's
config; a method's own TOML section holds everything else. Python users set them directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from consortium.config import Options
from consortium.core.aggregation import Update, robust_mean
from consortium.core.message import Arrays
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


class AggregationOptions(Options):
    """How the server combines members' updates: a method's ``aggregation`` table
    (``[fedavg.aggregation]``).

    The default is the weighted mean. The robust rules bound what a few hostile members can do
    to the model (:func:`~consortium.core.aggregation.robust_mean`); each entry is combined
    over the members that cover it, so partial updates (FedRA's blocks, narrower tensors,
    masks) work with every rule. Except ``mean``, the rules ignore sample-count weights (a
    member could claim any count); ``multi_krum`` averages the updates it keeps by weight.
    """

    rule: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"] = Field(
        "mean", description="mean | median | trimmed_mean | krum | multi_krum"
    )
    trim_fraction: float = Field(
        0.2, ge=0, lt=0.5, description="trimmed_mean: share of each entry's values cut at each end"
    )
    byzantine: int = Field(
        0,
        ge=0,
        description="krum, multi_krum: members assumed hostile, f (scores sum the n - f - 2 "
        "nearest; multi_krum keeps n - f)",
    )
    keep: int | None = Field(
        None, ge=1, description="multi_krum: updates averaged (default: n - byzantine)"
    )
    clip_norm: float | str | None = Field(
        None,
        description="first scale each update's change down to this L2 norm ('median': the "
        "round's median norm)",
    )

    @field_validator("clip_norm")
    @classmethod
    def _norm(cls, v: float | str | None) -> float | str | None:
        if v is None or v == "median" or (isinstance(v, float) and v > 0):
            return v
        raise ValueError(f"clip_norm must be a positive number or 'median', got {v!r}")

    @property
    def robust(self) -> bool:
        """Whether the server needs each update on its own (anything but a plain mean)."""
        return self.rule != "mean" or self.clip_norm is not None

    def aggregate(self, updates: Sequence[Update], reference: Mapping[str, np.ndarray]) -> Arrays:
        """The new arrays from the round's updates (entries nobody covered keep
        ``reference``)."""
        return robust_mean(updates, reference, **self.model_dump())  # fields = its keywords


class AggregatingConfig(Options):
    """A method whose server combines members' updates with a configurable rule."""

    aggregation: AggregationOptions = Field(
        default_factory=AggregationOptions,
        description="how updates are combined: rule, trim_fraction, byzantine, keep, clip_norm",
    )


class AveragingConfig(FederatedConfig, AggregatingConfig):
    """A method whose server averages members' models (FedAvg and its relatives)."""

    weighted: bool = Field(True, description="weight updates by member sample counts")
    evaluate_clients: bool = Field(True, description="final evaluation on every member's test view")
