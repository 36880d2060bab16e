"""FedRA's options, and those of the baselines that add a field of their own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from consortium.algorithms.base.config import AggregatingConfig, FederatedConfig
from consortium.data.text import MINILM
from consortium.models.transformer import LoraSettings
from consortium.training import LocalTrainConfig

Allocation = Literal["random", "first", "all", "first_min"]


class FedRAConfig(FederatedConfig, AggregatingConfig):
    """FedRA (Su, Li, Xue, ECCV 2024) and the baselines that differ only in who trains which
    blocks (the variant says which: see :mod:`consortium.algorithms.fedra.workflow`)."""

    local: LocalTrainConfig = Field(
        default_factory=lambda: LocalTrainConfig(
            epochs=1, batch_size=32, lr=0.01, weight_decay=1e-5
        ),
        description="local optimisation ([train])",
    )
    capacities: list[int] = Field(
        ..., min_length=1, description="blocks each member can hold, L_k (cycled if shorter)"
    )
    backbone: str = Field(
        MINILM,
        description='"minilm", "tiny" / "tiny_dinov2" (random, for checks) or a checkpoint folder',
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    cover_all_layers: bool = Field(
        False,
        description="redraw random rows until every block is trained this round (the official "
        "code keeps uncovered blocks' adapters instead)",
    )
    weighted: bool = Field(
        False, description="weight adapters by sample counts (the official code: unweighted)"
    )

    @field_validator("capacities")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"capacities must be >= 1 block each, got {v}")
        return v

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout)

    def member_capacities(self, num_clients: int) -> tuple[int, ...]:
        """One capacity per member (the list cycled over the members)."""
        return tuple(self.capacities[i % len(self.capacities)] for i in range(num_clients))


class InclusiveFLConfig(FedRAConfig):
    """InclusiveFL (Liu et al., KDD 2022): first L_k blocks, depth-wise partial averaging."""

    momentum_distillation: bool = Field(
        False,
        description="momentum distillation into shallow top blocks (the FedRA code defines it "
        "but never calls it)",
    )
    momentum_beta: float = Field(0.2, ge=0, le=1, description="share of the deeper momentum")


class DepthFLConfig(FedRAConfig):
    """DepthFL (Kim, Kim, Kim, Kim; ICLR 2023) on transformer blocks: member k trains the
    first L_k blocks with one classifier after each, the classifiers teaching each other."""

    kd_weight: float = Field(
        1.0, ge=0, description="weight of the mutual self-distillation (temperature 1)"
    )
    kd_rampup: int = Field(
        0,
        ge=0,
        description="rounds of exp(-5(1-r/R)^2) ramp-up (FedRA's code: 500; 0: constant)",
    )
    eval_head: Literal["ensemble", "last"] = Field(
        "ensemble",
        description="released model predicts with the heads' ensemble or the last head (FedRA "
        "code)",
    )
