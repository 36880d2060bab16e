"""FedAvg's (and FedProx's) options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from consortium.training import LocalTrainConfig


@dataclass(frozen=True)
class FedAvgConfig:
    """Options of FedAvg (McMahan et al., AISTATS 2017) with FedProx's term (Li et al., MLSys 2020).

    Attributes
    ----------
    rounds
        Communication rounds.
    clients_per_round
        Members sampled each round: an int count, or a float fraction in (0, 1].
    local
        How each member trains in a round (epochs, batch size, optimiser).
    prox_mu
        FedProx's proximal coefficient; 0 is plain FedAvg.
    weighted
        Weight each update by the member's number of samples (FedAvg) or equally.
    eval_every
        Evaluate the global model on the server's test set every this many rounds (and always
        after the last).
    evaluate_clients
        After training, ask every member to evaluate the final model on its own test view.
    """

    rounds: int = 20
    clients_per_round: int | float = 1.0
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    prox_mu: float = 0.0
    weighted: bool = True
    eval_every: int = 1
    evaluate_clients: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {self.prox_mu}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if isinstance(self.clients_per_round, float) and not 0 < self.clients_per_round <= 1:
            raise ValueError(
                f"a fraction clients_per_round must be in (0, 1], got {self.clients_per_round}"
            )
        if isinstance(self.clients_per_round, int) and self.clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {self.clients_per_round}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
