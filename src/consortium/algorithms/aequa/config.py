"""Aequa's options: how the slimmable model is trained, how widths are allocated.

Where the paper is silent every choice is a field here with the default we picked, and
``docs/methods/aequa.md`` says why. :class:`WidthTraining` is also what a member reads from a
training message, so member and server share one declaration of each setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from consortium.algorithms.base.config import AveragingConfig
from consortium.algorithms.fairness.config import FairRewardConfig
from consortium.config import Options


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
    sub_batch: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of each batch the narrower widths train on (1: Algorithm 1)",
    )

    def message_config(self) -> dict[str, Any]:
        """The width settings, flat for a training message's config."""
        return self.model_dump(include=set(WidthTraining.model_fields))


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


class AequaTrainingTimeConfig(AequaConfig):
    """Aequa with training-time rewards (Algorithm 2 as reconstructed)."""

    warmup_rounds: int = Field(
        2, ge=0, description="rounds in which everyone trains the full model before allocation"
    )
    curve_step: float = Field(
        0.1, gt=0, le=1, description="width-grid spacing of the per-round accuracy curve"
    )
