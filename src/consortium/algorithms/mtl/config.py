"""Options of DMTRL and of the references it is compared with (one frozen dataclass each).

Every choice papers.md §4(g) lists as open (σ', adding vs averaging, H, when Ω is updated, the
eigenvalue floor) is a field here, with the default we chose and why in its help text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from consortium.algorithms.mtl.objective import LOSSES, LossName, SigmaRule

Aggregation = Literal["add", "average"]


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def _check_lambdas(lambda1: float, lambda2: float) -> None:
    if not lambda1 >= 0:
        raise ValueError(f"lambda1 must be >= 0, got {lambda1}")
    if not lambda2 > 0:
        raise ValueError(
            f"lambda2 must be > 0 (it weighs the task-relationship term), got {lambda2}"
        )


def _check_floor(floor: float) -> None:
    if not 0 < floor < 1:
        raise ValueError(f"omega_floor must be in (0, 1) (a fraction of 1/m), got {floor}")


@dataclass(frozen=True)
class DMTRLConfig:
    """Options of distributed multi-task relationship learning (Liu, Pan & Ho, KDD 2017).

    Attributes
    ----------
    rounds
        Maximum communication rounds. Once Ω has converged and the W-step's duality gap is
        below ``gap_tolerance``, the remaining rounds send nothing.
    loss
        ``squared`` (regression) or ``hinge`` (binary classification, labels ±1).
    lambda1
        Weight of ``(λ1/2)‖W‖²``; 0 (the default) drops the term, as MOCHA does.
    lambda2
        Weight of the task-relationship term ``(λ2/2) tr(W Ω⁻¹ Wᵀ)``; must be > 0.
    local_passes
        H, the SDCA steps a member takes per round, as a multiple of its sample count
        (``H_i = ceil(local_passes · n_i)``). Default 0.5: MOCHA's choice. More steps mean fewer
        rounds but more member time per round.
    local_steps
        A fixed H for every member instead (``None``: use ``local_passes``).
    sigma
        σ' of the members' subproblems. ``"safe"``: ``γ · λ_max(D^{-1/2} K D^{-1/2})``, the
        smallest value that guarantees the dual increases (``D = diag K``, γ the aggregation
        weight); ``"rowsum"``: MOCHA's cheaper bound ``γ · max_i Σ_k |K_ik| / K_ii``; a number
        fixes it (values below the safe one may diverge).
    aggregation
        ``"add"`` (``U ← U + ΔU``, γ = 1; CoCoA+) or ``"average"`` (``U ← U + ΔU/m``, γ = 1/m;
        CoCoA). Adding with the safe σ' is never slower in our runs.
    omega_floor
        Ω is kept in ``{Ω ⪰ (omega_floor/m) I, tr Ω = 1}`` (the Ω-step is the exact minimiser
        over that set). It shrinks the task covariance towards ``I/m`` and keeps the
        alternation fast; smaller values fit sharper task structure but need many more
        Ω-steps. Must be in (0, 1).
    omega_every
        At most this many W-step rounds between Ω-steps.
    inexact
        An Ω-step is taken as soon as the W-step's relative duality gap is below
        ``max(gap_tolerance, inexact × c)``, ``c`` being the relative change of Ω at the
        previous Ω-step (1 before the first). Early W-steps, whose Ω is far from the optimum,
        are thus solved only roughly, the last ones to ``gap_tolerance``; the fixed point is
        the same. ``0`` solves every W-step to ``gap_tolerance``.
    omega_updates
        Cap on the number of Ω-steps; ``0`` keeps Ω = I/m (pure W-step, the classic CoCoA
        setting), ``None`` leaves it to ``omega_tolerance``.
    gap_tolerance
        Relative duality gap ``(P - D)/|P|`` at which a W-step counts as solved.
    omega_tolerance
        Relative change ``‖Ω_new - Ω‖_F / ‖Ω‖_F`` below which the alternation has converged
        (no more Ω-steps).
    """

    rounds: int = 500
    loss: LossName = "squared"
    lambda1: float = 0.0
    lambda2: float = 0.1
    local_passes: float = 0.5
    local_steps: int | None = None
    sigma: float | SigmaRule = "safe"
    aggregation: Aggregation = "add"
    omega_floor: float = 0.1
    omega_every: int = 100
    inexact: float = 0.1
    omega_updates: int | None = None
    gap_tolerance: float = 1e-6
    omega_tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        _check_loss(self.loss)
        _check_lambdas(self.lambda1, self.lambda2)
        if not self.local_passes > 0:
            raise ValueError(f"local_passes must be > 0, got {self.local_passes}")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        if isinstance(self.sigma, str):
            if self.sigma not in ("safe", "rowsum"):
                raise ValueError(
                    f"sigma must be 'safe', 'rowsum' or a number > 0, got {self.sigma!r}"
                )
        elif not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.aggregation not in ("add", "average"):
            raise ValueError(f"aggregation must be 'add' or 'average', got {self.aggregation!r}")
        _check_floor(self.omega_floor)
        if self.omega_every < 1:
            raise ValueError(f"omega_every must be >= 1, got {self.omega_every}")
        if not self.inexact >= 0:
            raise ValueError(f"inexact must be >= 0, got {self.inexact}")
        if self.omega_updates is not None and self.omega_updates < 0:
            raise ValueError(f"omega_updates must be >= 0, got {self.omega_updates}")
        if not self.gap_tolerance >= 0:
            raise ValueError(f"gap_tolerance must be >= 0, got {self.gap_tolerance}")
        if not self.omega_tolerance >= 0:
            raise ValueError(f"omega_tolerance must be >= 0, got {self.omega_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MTRLConfig:
    """Options of centralised MTRL (Zhang & Yeung, UAI 2010): the same objective as DMTRL,
    solved on the pooled data by alternating exact W-steps and Ω-steps.

    Attributes
    ----------
    loss, lambda1, lambda2, omega_floor
        As in :class:`DMTRLConfig` (use the same values to compare the two).
    tolerance
        Stop when the relative change of Ω falls below this.
    max_outer
        Cap on the Ω-steps.
    """

    loss: LossName = "squared"
    lambda1: float = 0.0
    lambda2: float = 0.1
    omega_floor: float = 0.1
    tolerance: float = 1e-10
    max_outer: int = 5000

    def __post_init__(self) -> None:
        _check_loss(self.loss)
        _check_lambdas(self.lambda1, self.lambda2)
        _check_floor(self.omega_floor)
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")
        if self.max_outer < 1:
            raise ValueError(f"max_outer must be >= 1, got {self.max_outer}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SingleModelConfig:
    """Options of the two references with a plain ``(λ/2)‖w‖²`` penalty: single-task learning
    (each member alone, ridge or a linear SVM) and one global model for all tasks.

    Attributes
    ----------
    loss
        ``squared`` or ``hinge``.
    lam
        λ of ``(1/n) Σ ℓ + (λ/2)‖w‖²`` (per task's mean loss; must be > 0).
    """

    loss: LossName = "squared"
    lam: float = 0.1

    def __post_init__(self) -> None:
        _check_loss(self.loss)
        if not self.lam > 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
