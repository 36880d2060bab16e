"""FedRA's options, and the allocation rules of its depth-heterogeneous baselines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consortium.models.transformer import LoraSettings
from consortium.training import LocalTrainConfig

Allocation = Literal["random", "first", "all", "first_min"]


@dataclass(frozen=True)
class FedRAConfig:
    """FedRA (Su, Li, Xue, ECCV 2024) and the baselines that differ only in who trains which
    blocks.

    Attributes
    ----------
    capacities
        Blocks each member can hold (L_k), one entry per member.
    allocation
        ``random``: FedRA — every round each member gets L_k blocks drawn uniformly at random
        (kept in order); ``first``: InclusiveFL — the first L_k blocks; ``all``: ALL-large —
        every member trains every block, ignoring its limit; ``first_min``: ALL-small — every
        member and the global model use only the first min L_k blocks.
    cover_all_layers
        Redraw random rows until every block is trained by some participant this round (the
        official code keeps uncovered blocks' adapters instead; off by default, as there).
    weighted
        Weight each member's adapters by its sample count (the official code averages
        unweighted; so do we by default).
    momentum_distillation, momentum_beta
        InclusiveFL's momentum knowledge distillation (``first`` allocation only): the update
        of each shallower depth group's top block is nudged towards last round's mean update
        of the blocks it lacks in the next deeper group, ``(1 - beta)·own + beta·deeper``.
        Off by default: the FedRA code has it but never calls it, so the paper's InclusiveFL
        numbers come from plain depth-wise partial averaging.
    rounds, clients_per_round, local, lora, eval_every
        Rounds, members per round (count or fraction), local optimisation, LoRA settings,
        evaluation cadence on the server test set.
    """

    capacities: tuple[int, ...]
    allocation: Allocation = "random"
    cover_all_layers: bool = False
    weighted: bool = False
    momentum_distillation: bool = False
    momentum_beta: float = 0.2
    rounds: int = 20
    clients_per_round: int | float = 1.0
    local: LocalTrainConfig = field(
        default_factory=lambda: LocalTrainConfig(
            epochs=1, batch_size=32, lr=0.01, weight_decay=1e-5
        )
    )
    lora: LoraSettings = field(default_factory=LoraSettings)
    eval_every: int = 1

    def __post_init__(self) -> None:
        if not self.capacities or min(self.capacities) < 1:
            raise ValueError(f"capacities must be >= 1 block each, got {self.capacities}")
        if self.allocation not in ("random", "first", "all", "first_min"):
            raise ValueError(f"unknown allocation {self.allocation!r}")
        if self.rounds < 1 or self.eval_every < 1:
            raise ValueError("rounds and eval_every must be >= 1")
        if self.momentum_distillation and self.allocation != "first":
            raise ValueError("momentum_distillation is InclusiveFL's: it needs allocation 'first'")
        if not 0 <= self.momentum_beta <= 1:
            raise ValueError(f"momentum_beta must be in [0, 1], got {self.momentum_beta}")


@dataclass(frozen=True)
class DepthFLConfig(FedRAConfig):
    """DepthFL (Kim, Kim, Kim, Kim; ICLR 2023) on transformer blocks: member k trains the
    first L_k blocks with one classifier after each of them, the classifiers teaching each
    other (mutual self-distillation); blocks and classifiers are averaged over their holders.

    Attributes
    ----------
    kd_weight
        Weight of the distillation term ``sum_o sum_{j != o} KL(p_j || p_o) / (H - 1)`` beside
        the heads' cross-entropies (temperature 1; the teacher side carries no gradient).
    kd_rampup
        Rounds over which the weight ramps up as ``exp(-5 (1 - r/R)^2)`` (FedRA's DepthFL
        code: 500); 0 = constant weight (our default: with tens of rounds a 500-round ramp
        leaves the distillation practically off).
    eval_head
        ``ensemble``: the released model predicts with the mean of the softmax outputs of
        every classifier some member has trained (DepthFL's ensemble inference; works when no
        member holds the last block); ``last``: the classifier after the last block only (the
        FedRA code's choice).
    """

    allocation: Allocation = "first"
    kd_weight: float = 1.0
    kd_rampup: int = 0
    eval_head: Literal["ensemble", "last"] = "ensemble"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.allocation != "first":
            raise ValueError("DepthFL gives every member its first L_k blocks (allocation 'first')")
        if self.kd_weight < 0 or self.kd_rampup < 0:
            raise ValueError("kd_weight and kd_rampup must be >= 0")
        if self.eval_head not in ("ensemble", "last"):
            raise ValueError(f"eval_head must be 'ensemble' or 'last', got {self.eval_head!r}")
