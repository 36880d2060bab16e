"""Ω-steps that reach the optimum: a certificate, Anderson acceleration, a floor lowered in stages.

Alternating exact W-steps with MTRL's closed-form Ω-step (``objective.omega_step``) is a
majorise–minimise scheme for a jointly convex problem, and near the constraint
``Ω ⪰ (floor/m) I`` it stalls: an eigen-direction of Ω held at the floor makes W drop its
component along it (the penalty there is ``m/floor``), so the next Ω-step sees nothing that
would turn it: with ``floor = 1e-6`` the plain alternation stalls above the optimum
(docs/methods/dmtrl.md, ``tests/algorithms/mtl/test_omega.py``). Three pieces
make the alternation fast and its end verifiable; centralised MTRL and DMTRL share them:

1. **A certificate** (:func:`joint_dual_value`, ``λ1 = 0``). For any dual variables α,
   ``G(α) = -Σ_i C_i - (1/(2λ2)) [ε tr(UᵀU) + (1 - mε) λ_max(UᵀU)]`` (``C_i`` the mean
   conjugates, ``u_i = X_iᵀα_i/n_i``, ``ε = floor/m``) is ``min_Ω D(α; Ω)`` over the feasible
   set, so by weak duality ``G(α) <= P*`` for the *joint* problem: ``(P(W, Ω) - G) / P``
   bounds how far the current pair is from the optimum in both W and Ω, whatever the path.
2. **Anderson acceleration** (:class:`OmegaSteps`, ``memory`` past steps) of the fixed-point
   map ``Ω ↦ Ω-step(W(Ω))``: the next Ω is the combination of past steps whose residuals
   cancel best (least squares), projected onto ``{Ω ⪰ εI, tr Ω = 1}``. It is kept only if the
   objective at the end of the next W-step is not above the one it started from; otherwise the
   plain step from that point is taken and the memory cleared, so the accepted objectives never
   increase.
3. **Continuation**: the floor starts at ``max(floor, start)`` and is divided by ten each time
   the certificate for the current floor falls below ``stage_tolerance``; an eigen-direction
   then reaches a small floor already turned where it belongs.

The fixed point is the plain alternation's: Ω is the closed-form step of the final W.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consortium.algorithms.mtl.objective import omega_step

#: The floor continuation divides the floor by this much per stage.
STAGE_FACTOR = 10.0


def joint_dual_value(conjugate_sum: float, u: np.ndarray, floor: float, lam2: float) -> float:
    """``min_Ω D(α; Ω)`` over ``{Ω ⪰ (floor/m) I, tr Ω = 1}`` with ``λ1 = 0``: a lower bound on
    the optimum of the whole problem (``u``: the ``d × m`` matrix ``U`` of the same α)."""
    m = u.shape[1]
    eps = floor / m
    eig = np.linalg.eigvalsh(u.T @ u)
    top = float(max(eig.max(), 0.0))
    return float(-conjugate_sum - (eps * float(eig.sum()) + (1.0 - m * eps) * top) / (2 * lam2))


def relative_gap(primal: float, lower: float) -> float:
    return (primal - lower) / max(abs(primal), 1e-300)


def project_omega(a: np.ndarray, floor: float) -> np.ndarray:
    """Nearest (Frobenius) matrix to ``a`` in ``{Ω = Ωᵀ, Ω ⪰ (floor/m) I, tr Ω = 1}``: the
    eigenvalues are projected onto the floored simplex, the eigenvectors kept."""
    m = a.shape[0]
    e, v = np.linalg.eigh(0.5 * (a + a.T))
    eps = floor / m
    # Find τ with Σ max(ε, e_k - τ) = 1 (monotone in τ): bisection to machine precision.
    lo, hi = float(e.min()) - 1.0, float(e.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(eps, e - mid).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    kept = np.maximum(eps, e - 0.5 * (lo + hi))
    out = (v * (kept / kept.sum())) @ v.T
    return 0.5 * (out + out.T)


class OmegaSteps:
    """The server's Ω-steps: floor stages, Anderson acceleration with a safeguard.

    Parameters
    ----------
    floor
        The target eigenvalue floor (relative to ``1/m``) of the problem being solved.
    memory
        Past steps Anderson acceleration combines (0: the plain closed-form step).
    start
        First floor of the continuation (``None`` or a value <= ``floor``: no continuation).
    """

    def __init__(self, floor: float, memory: int = 5, start: float | None = 0.1) -> None:
        if not 0 < floor < 1:
            raise ValueError(f"omega_floor must be in (0, 1), got {floor}")
        if memory < 0:
            raise ValueError(f"memory must be >= 0, got {memory}")
        self.target = float(floor)
        self.floor = max(self.target, float(start or 0.0))
        self.memory = int(memory)
        self._clear()

    def _clear(self) -> None:
        self.points: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []
        self.fallback: np.ndarray | None = None
        self.reference: float | None = None

    @property
    def final_stage(self) -> bool:
        """Whether the floor in use is the target floor."""
        return self.floor <= self.target

    def lower_floor(self) -> None:
        """Next stage of the continuation: the floor divided by ten (not below the target)."""
        nxt = self.floor / STAGE_FACTOR
        self.floor = self.target if nxt <= self.target * (1 + 1e-9) else nxt
        self._clear()

    def step(
        self, omega: np.ndarray, w: np.ndarray, objective: float | None
    ) -> tuple[np.ndarray, float, str]:
        """The next Ω from the current one, the W solved for it and ``P(W, Ω)`` (``None`` when
        unknown: the step is then plain).

        Returns ``(Ω_next, change, how)``: ``change`` is the relative change of the plain step
        ``‖Ω-step(W) − Ω‖ / ‖Ω‖`` (the fixed-point residual), ``how`` one of ``plain``,
        ``extrapolated`` or ``rejected`` (the last extrapolation raised the objective: back to
        the plain step from before it).
        """
        plain = omega_step(w, self.floor)
        change = float(np.linalg.norm(plain - omega) / np.linalg.norm(omega))
        if self.fallback is not None:
            ref = self.reference
            if objective is None or ref is None or objective > ref + 1e-13 * abs(ref):
                back = self.fallback
                self._clear()
                return back, change, "rejected"
        if objective is None or self.memory == 0:
            self._clear()
            return plain, change, "plain"
        self.points = [*self.points, omega.ravel().copy()][-(self.memory + 1) :]
        self.residuals = [*self.residuals, (plain - omega).ravel()][-(self.memory + 1) :]
        self.fallback = self.reference = None
        if len(self.points) < 2:
            return plain, change, "plain"
        x, r = np.array(self.points).T, np.array(self.residuals).T
        d_r, d_x = np.diff(r, axis=1), np.diff(x, axis=1)
        coef, *_ = np.linalg.lstsq(d_r, r[:, -1], rcond=None)
        mixed = (x[:, -1] + r[:, -1]) - (d_x + d_r) @ coef
        m = omega.shape[0]
        # Kept only if the next W-step ends lower than here; else back to ``plain``.
        self.fallback, self.reference = plain, float(objective)
        return project_omega(mixed.reshape(m, m), self.floor), change, "extrapolated"

    def state_dict(self) -> dict[str, Any]:
        return {
            "floor": self.floor,
            "points": list(self.points),
            "residuals": list(self.residuals),
            "fallback": self.fallback,
            "reference": self.reference,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.floor = float(state["floor"])
        self.points = [np.array(p, copy=True) for p in state["points"]]
        self.residuals = [np.array(r, copy=True) for r in state["residuals"]]
        fallback = state["fallback"]
        self.fallback = None if fallback is None else np.array(fallback, copy=True)
        self.reference = state["reference"]
