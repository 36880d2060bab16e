"""Aequa's options: how the slimmable model is trained, how widths are allocated.

Where the paper is silent every choice is a field here with the default we picked, and
``docs/methods/aequa.md`` says why. :class:`WidthTraining` is also what a member reads from a
training message, so member and server share one declaration of each setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from consortium.algorithms.base.config import AveragingConfig
from consortium.algorithms.fairness.config import FairRewardConfig
from consortium.config import Options

#: Default of ``narrow_every`` (docs/methods/aequa.md, "Round time", says how it was chosen).
NARROW_EVERY = 4


class WidthTraining(Options):
    """How a member trains the slimmable model on each batch (Algorithm 1 as reconstructed)."""

    p_min: float = Field(
        0.1,
        gt=0,
        le=1,
        description="narrowest width trained and rewarded (slimmable default 0.25; a wider "
        "achievable accuracy range separates members better, narrow passes are cheaper)",
    )
    width_rule: Literal["random", "sandwich"] = Field(
        "random",
        description="random: the full width + num_random widths from U[p_min, 1]; sandwich "
        "(US-Nets): p_min too",
    )
    num_random: int = Field(1, ge=0, le=16, description="random widths per batch")
    distill: bool = Field(
        False, description="in-place distillation: sub-widths fit the full width's predictions"
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature of distillation")
    training: Literal["budget", "algorithm1"] = Field(
        "budget",
        description="budget: narrower widths on one batch in narrow_every (a round costs at "
        "most ~1.25x FedAvg's); algorithm1: on every batch (Algorithm 1 as reconstructed)",
    )
    narrow_every: int = Field(
        NARROW_EVERY,
        ge=1,
        le=1000,
        description="budget training: one batch in this many also trains a narrower width",
    )
    sub_batch: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of a batch the narrower widths train on (1: the whole batch)",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> WidthTraining:
        if self.training == "algorithm1" and "narrow_every" in self.model_fields_set:
            raise ValueError(
                "narrow_every: algorithm1 trains narrower widths on every batch; drop "
                "narrow_every, or use training = 'budget'"
            )
        return self

    @property
    def batches_per_narrow_pass(self) -> int:
        """1 under Algorithm 1, else ``narrow_every``."""
        return 1 if self.training == "algorithm1" else self.narrow_every

    def message_config(self) -> dict[str, Any]:
        """The width settings, flat for a training message's config."""
        fields = set(WidthTraining.model_fields)
        if self.training == "algorithm1":
            fields.discard("narrow_every")
        return self.model_dump(include=fields)


class AequaConfig(WidthTraining, FairRewardConfig, AveragingConfig):
    """Aequa (Tastan, Horváth, Nandakumar, ICML 2025): a slimmable model trained by FedAvg,
    then a sub-network per member whose accuracy follows its contribution (``evaluate_clients``:
    members score their rewards on their own test views)."""

    grid_step: float = Field(
        0.01, gt=0, le=1, description="spacing of the width grid of the reward curve"
    )
    normalisation: Literal["minmax", "max"] = Field(
        "max",
        description="max: c/c_max (near-equal contributors get near-equal rewards); minmax: "
        "(c - c_min)/(c_max - c_min)",
    )
    rule: Literal["nearest", "first_reaching"] = Field(
        "nearest",
        description="nearest: the width whose accuracy is closest to the target; "
        "first_reaching: the narrowest width reaching it",
    )

    def validation_use(self) -> str | None:
        if self.contribution == "standalone":
            return "the width curve and the standalone contributions are measured"
        return "the width curve is measured"


class AequaTrainingTimeConfig(AequaConfig):
    """Aequa with training-time rewards (Algorithm 2 as reconstructed)."""

    warmup_rounds: int = Field(
        2, ge=0, description="rounds in which everyone trains the full model before allocation"
    )
    curve_step: float = Field(
        0.1, gt=0, le=1, description="width-grid spacing of the per-round accuracy curve"
    )
