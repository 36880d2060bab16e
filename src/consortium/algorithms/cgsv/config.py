"""CGSV's options (defaults: the authors' code for (Fashion-)MNIST; docs/methods/aequa.md)."""

from __future__ import annotations

from pydantic import Field

from consortium.algorithms.fairness.config import OwnModelConfig


class CGSVConfig(OwnModelConfig):
    """Cosine-gradient Shapley value rewards (Xu, Lyu et al., NeurIPS 2021).

    The authors' code trains every member each round (``clients_per_round = 1.0``); every
    member receives its reward each round, trained or not. ``contribution`` is what the rewards
    are *judged* against (Pearson ρ); ``cgsv`` judges them against CGSV's own reputations.
    """

    gamma: float = Field(
        0.5,
        ge=0,
        description="norm every update is rescaled to (0.5 for (F)MNIST in the code; 0.15 "
        "CIFAR; 1 SST); 0 disables it",
    )
    alpha: float = Field(0.95, ge=0, lt=1, description="reputation moving-average factor")
    beta: float = Field(
        1.0,
        gt=0,
        description="altruism degree of q_i = tanh(beta r_i) / max_j tanh(beta r_j) (large: "
        "everyone gets everything)",
    )
