"""IAFL's options (defaults: the authors' code, papers.md 1(d))."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from consortium.algorithms.aequa.config import ContributionConfig
from consortium.training import LocalTrainConfig


@dataclass(frozen=True)
class IAFLConfig:
    """Incentive-aware federated learning with training-time model rewards (Wu, Amiri,
    Raskar, Low, ICLR 2024).

    Attributes
    ----------
    rounds
        Communication rounds.
    clients_per_round
        Members that train each round (count or fraction); the code's default join rate is 1.
    local
        Local optimisation of each member's copy of its own model.
    contribution
        The contribution ``p_i`` that sets the reward proportions (and that the rewards are
        judged against): ``data_size`` (the code's default: shard sizes) or ``standalone``
        (its documented option), or ``given``. ``cgsv`` is not available here.
    kappa
        Sharing parameter κ: member ``i`` receives ``⌈γ_i^(1−κ)·(|joined| − 1)⌉`` other
        updates; κ = 1 gives everyone everything (FedAvg-like). Default 0.
    q
        Probability that a member's model is reset to the server model at the start of a round
        (stochastic recovery). Default 0.
    gamma
        Norm the updates are rescaled to before they are shared (0: not rescaled, as the
        IAFL code; its clipping variant is commented out).
    measure_standalone
        Run the standalone phase (needed for IPR and standalone contributions).
    eval_every
        Evaluate the server model on the test set every this many rounds.
    chunk_size
        Members per exchange when rewards are sent and models collected.
    """

    rounds: int = 20
    clients_per_round: int | float = 1.0
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    contribution: ContributionConfig = field(
        default_factory=lambda: ContributionConfig(kind="data_size")
    )
    kappa: float = 0.0
    q: float = 0.0
    gamma: float = 0.0
    measure_standalone: bool = True
    eval_every: int = 1
    chunk_size: int = 32

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.contribution.kind == "cgsv":
            raise ValueError("IAFL needs contributions known before training (not cgsv)")
        if not 0.0 <= self.kappa <= 1.0:
            raise ValueError(f"kappa must be in [0, 1], got {self.kappa}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
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
