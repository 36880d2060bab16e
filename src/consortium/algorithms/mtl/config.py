"""Options of DMTRL and of the references it is compared with, each declared once.

Every choice the paper leaves open (σ', adding vs averaging, H, when Ω is updated, the eigenvalue
floor) is a field here, with the default we chose and why in its help text
(docs/methods/dmtrl.md). ``loss`` and the λ's may be left unset: the loss then follows the task
kind (squared for regression, hinge for ±1 labels) and λ is chosen by validation on part of each
task's training data when the method is built from an experiment.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator

from consortium.algorithms.base.config import MethodConfig
from consortium.algorithms.mtl.objective import LossName, SigmaRule

Aggregation = Literal["add", "average"]
TaskKind = Literal["regression", "classification"]

DEFAULT_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Ω floors validated with λ2 when ``omega_floor`` is unset: 1e-4 is MTRL's closed form to about
#: six digits (Ω, regulariser) and the smallest floor whose optimum the joint certificate still
#: resolves in float64 (at 1e-6 it cannot: docs/methods/dmtrl.md, "The Ω floor"); 0.1 shrinks Ω
#: well towards I/m.
FLOOR_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)


class ValidatedConfig(MethodConfig):
    """Options every multi-task method shares: its loss and how λ is chosen when unset."""

    loss: LossName | None = Field(
        None, description="squared | hinge (unset: squared for regression, hinge for ±1 labels)"
    )
    lambda_grid: list[float] = Field(
        default_factory=lambda: list(DEFAULT_GRID),
        min_length=1,
        description="λ candidates when λ is chosen by validation",
    )
    validation_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of each task's training data used to validate λ"
    )

    def resolved(self, kind: TaskKind) -> Self:
        """These options with the loss fixed for tasks of ``kind`` (λ must be set by now)."""
        missing = [name for name in self.lambdas() if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{missing[0]} is unset: give it, or build the method from an experiment to "
                "choose it by validation"
            )
        loss = self.loss or ("hinge" if kind == "classification" else "squared")
        return self.model_copy(update={"loss": loss})

    def lambdas(self) -> tuple[str, ...]:
        """The fields (λ's, the Ω floor) validation chooses when they are unset."""
        return ()


class MTRLObjective(ValidatedConfig):
    """The MTRL objective (Zhang & Yeung, UAI 2010) DMTRL and centralised MTRL both solve."""

    lambda1: float = Field(0.0, ge=0, description="weight of (λ1/2)‖W‖² (0 drops it, as MOCHA)")
    lambda2: float | None = Field(
        None, gt=0, description="weight of (λ2/2) tr(W Ω⁻¹ Wᵀ); unset: chosen by validation"
    )
    omega_floor: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Ω ⪰ (omega_floor/m) I: shrinks Ω towards I/m (small: MTRL's closed form); "
        "unset: chosen by validation together with λ2 from floor_grid",
    )
    floor_grid: list[float] = Field(
        default_factory=lambda: list(FLOOR_GRID),
        min_length=1,
        description="omega_floor candidates when the floor is chosen by validation",
    )

    @field_validator("floor_grid")
    @classmethod
    def _floors_in_range(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f < 1]
        if bad:
            raise ValueError(f"every floor must be in (0, 1), got {bad[0]}")
        return v

    def lambdas(self) -> tuple[str, ...]:
        return ("lambda2", "omega_floor")


class AlternationConfig(MTRLObjective):
    """How W- and Ω-steps alternate towards the optimum, for DMTRL and centralised MTRL alike
    (``omega.py``: certificate, acceleration, floor continuation)."""

    acceleration: int = Field(
        5, ge=0, le=50, description="past Ω-steps Anderson acceleration combines (0: plain steps)"
    )
    continuation_start: float | None = Field(
        0.1,
        gt=0,
        lt=1,
        description="first floor of the continuation, divided by 10 per stage down to "
        "omega_floor (unset: none); needs λ1 = 0",
    )
    stage_tolerance: float = Field(
        1e-6, gt=0, description="relative joint gap at which a continuation stage ends"
    )
    joint_tolerance: float = Field(
        1e-6,
        gt=0,
        description="stop once the relative duality gap of the whole problem (W and Ω) is "
        "below (λ1 = 0; with λ1 > 0 the ΔΩ rule applies)",
    )


class DMTRLConfig(AlternationConfig):
    """Distributed multi-task relationship learning (Liu, Pan & Ho, KDD 2017)."""

    rounds: int = Field(
        500,
        ge=1,
        le=10_000_000,
        description="maximum rounds; once Ω converged and the W-step is solved, the rest send "
        "nothing",
    )
    local_passes: float = Field(
        0.5, gt=0, description="H, SDCA steps per round, as a multiple of n_i (MOCHA: 0.5)"
    )
    local_steps: int | None = Field(None, ge=1, description="a fixed H for every member")
    sigma: float | SigmaRule = Field(
        "safe",
        description="σ' of the subproblems: safe (γ·λ_max(D^-1/2 K D^-1/2), the smallest that "
        "guarantees ascent), rowsum (MOCHA's bound) or a number",
    )
    aggregation: Aggregation = Field(
        "add", description="add (U += ΔU, γ = 1; CoCoA+) or average (U += ΔU/m; CoCoA)"
    )
    omega_every: int = Field(100, ge=1, description="at most this many rounds per W-step")
    inexact: float = Field(
        0.1,
        ge=0,
        description="an Ω-step once the relative gap is below max(gap_tolerance, inexact × the "
        "last relative ΔΩ); 0 solves every W-step to gap_tolerance",
    )
    omega_updates: int | None = Field(
        None, ge=0, description="cap on Ω-steps (0 keeps Ω = I/m; unset: omega_tolerance)"
    )
    gap_tolerance: float = Field(
        1e-6,
        ge=0,
        description="relative gap of a solved W-step (kept at most joint_tolerance / 10 "
        "when the joint gap decides)",
    )
    omega_tolerance: float = Field(
        1e-6, ge=0, description="relative ΔΩ of a converged Ω (λ1 > 0 or capped Ω-steps)"
    )

    @field_validator("sigma")
    @classmethod
    def _positive_sigma(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not v > 0:
            raise ValueError(f"must be > 0 (or 'safe' / 'rowsum'), got {v}")
        return v


class MTRLConfig(AlternationConfig):
    """Centralised MTRL: the same objective on the pooled data, alternating exact W-steps and
    Ω-steps (a simulation-only reference)."""

    tolerance: float = Field(
        1e-10, gt=0, description="with λ1 > 0: stop when the relative ΔΩ is below"
    )
    max_outer: int = Field(5000, ge=1, description="cap on Ω-steps")


class SingleModelConfig(ValidatedConfig):
    """The references with a plain (λ/2)‖w‖² penalty: single-task learning (each member alone)
    and one global model for every task."""

    lam: float | None = Field(
        None, gt=0, description="λ of (1/n) Σ ℓ + (λ/2)‖w‖²; unset: chosen by validation"
    )

    def lambdas(self) -> tuple[str, ...]:
        return ("lam",)
