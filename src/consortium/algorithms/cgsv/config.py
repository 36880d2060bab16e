"""CGSV's options (defaults: the authors' code for (Fashion-)MNIST, papers.md 1(d))."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from consortium.algorithms.aequa.config import ContributionConfig
from consortium.training import LocalTrainConfig


@dataclass(frozen=True)
class CGSVConfig:
    """Cosine-gradient Shapley value rewards (Xu, Lyu et al., NeurIPS 2021).

    Attributes
    ----------
    rounds
        Communication rounds.
    clients_per_round
        Members that train each round (count or fraction); the authors' code uses all.
        Every member receives its reward each round, trained or not.
    local
        Local optimisation of each member's copy of its own model.
    gamma
        Norm Γ every update is rescaled to before aggregation (0.5 for MNIST / FMNIST in the
        code; 0.15 CIFAR; 1 SST). 0 disables the rescaling.
    alpha
        Reputation moving-average factor (0.95).
    beta
        Altruism degree of ``q_i = tanh(β·r_i) / max_j tanh(β·r_j)`` (1 in the code; swept
        over {0.5, 1, 1.2, 1.5, 2, 1e7} in the paper; large β gives everyone everything).
    contribution
        The contribution the rewards are *judged* against (Pearson ρ); ``kind = "cgsv"``
        judges them against CGSV's own reputations.
    measure_standalone
        Run the standalone phase (needed for IPR and standalone contributions).
    eval_every
        Evaluate the server model on the test set every this many rounds.
    chunk_size
        Members per exchange when models are collected at the end.
    """

    rounds: int = 20
    clients_per_round: int | float = 1.0
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    gamma: float = 0.5
    alpha: float = 0.95
    beta: float = 1.0
    contribution: ContributionConfig = field(default_factory=ContributionConfig)
    measure_standalone: bool = True
    eval_every: int = 1
    chunk_size: int = 32

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.eval_every < 1 or self.chunk_size < 1:
            raise ValueError("eval_every and chunk_size must be >= 1")
        c = self.clients_per_round
        if (isinstance(c, float) and not 0 < c <= 1) or (isinstance(c, int) and c < 1):
            raise ValueError(f"clients_per_round must be a count >= 1 or a fraction, got {c}")

    @property
    def needs_standalone(self) -> bool:
        return self.measure_standalone or self.contribution.kind == "standalone"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
