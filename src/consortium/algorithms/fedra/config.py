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
    rounds, clients_per_round, local, lora, eval_every
        Rounds, members per round (count or fraction), local optimisation, LoRA settings,
        evaluation cadence on the server test set.
    """

    capacities: tuple[int, ...]
    allocation: Allocation = "random"
    cover_all_layers: bool = False
    weighted: bool = False
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
