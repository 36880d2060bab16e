"""Precise centralised solvers: the references the distributed solver is checked against.

They see every task's training data at once (a simulation-only privilege) and solve the same
objective as DMTRL (``objective.py``) to high precision by a *different* route, so agreement is
evidence and not a tautology:

* squared loss: the W-step is one linear system ``(blockdiag(X_iᵀX_i/n_i) + M ⊗ I_d) vec W =
  vec(X_iᵀ y_i / n_i)``, solved by Cholesky (or conjugate gradients when ``d·m`` is large);
* hinge loss: the W-step's dual is a box-constrained concave quadratic, solved with L-BFGS-B on
  all dual variables at once and finished by exact coordinate ascent until the duality gap is
  below the tolerance;
* MTRL alternates exact W-steps with Ω-steps (``omega.py``) until the duality gap of the whole
  problem certifies the optimum.

Single-task learning (``K = I/λ`` per task) and one global model (all ``w_i`` tied, ``K = J/λ``)
are the same W-step with other couplings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortium.algorithms.mtl.objective import (
    check_loss,
    coupling,
    loss_values,
    primal_value,
)
from consortium.algorithms.mtl.omega import OmegaSteps, joint_dual_value, relative_gap

TaskSets = Sequence[tuple[np.ndarray, np.ndarray]]
DIRECT_SOLVE_MAX = 4000  # d·m above which the squared-loss W-step uses conjugate gradients


def _gap(sets: TaskSets, alphas: Sequence[np.ndarray], w: np.ndarray, loss: str) -> float:
    """Duality gap of ``(W(α), α)`` as the sum of per-sample Fenchel–Young gaps
    ``ℓ(z) + ℓ*(-α) + α z >= 0`` (equal to P - D when ``W = U K``; needs no ``M``)."""
    total = 0.0
    for i, ((x, y), a) in enumerate(zip(sets, alphas, strict=True)):
        z = x @ w[:, i]
        total += float(np.mean(loss_values(loss, y, z) + _conj(loss, y, a) + a * z))
    return total


def _conj(loss: str, y: np.ndarray, a: np.ndarray) -> np.ndarray:
    return 0.5 * a**2 - a * y if loss == "squared" else -a * y


def squared_w_step(sets: TaskSets, metric: np.ndarray) -> np.ndarray:
    """Exact W-step for squared loss with coupling ``M`` (``m × m``)."""
    m = len(sets)
    d = sets[0][0].shape[1]
    rhs = np.concatenate([x.T @ y / len(y) for x, y in sets])
    grams = [x.T @ x / len(y) for x, y in sets]
    import scipy.linalg  # imported where used: a member of another method never pays for it
    import scipy.sparse.linalg

    if d * m <= DIRECT_SOLVE_MAX:
        h = np.kron(metric, np.eye(d))
        for i, g in enumerate(grams):
            h[i * d : (i + 1) * d, i * d : (i + 1) * d] += g
        sol = scipy.linalg.solve(h, rhs, assume_a="pos")
    else:

        def matvec(v: np.ndarray) -> np.ndarray:
            wv = v.reshape(m, d)
            out = wv.T @ metric  # (d, m): Σ_k M_ki w_k
            return (np.stack([g @ wv[i] for i, g in enumerate(grams)]) + out.T).ravel()

        op = scipy.sparse.linalg.LinearOperator((d * m, d * m), matvec=matvec, dtype=np.float64)
        sol, info = scipy.sparse.linalg.cg(op, rhs, rtol=1e-13, atol=0.0, maxiter=20 * d * m)
        if info != 0:
            raise RuntimeError(f"conjugate gradients did not converge (info={info})")
    return sol.reshape(m, d).T.copy()


def hinge_w_step(
    sets: TaskSets,
    kernel: np.ndarray,
    alphas: Sequence[np.ndarray] | None = None,
    tol: float = 1e-10,
    max_sweeps: int = 100_000,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Exact W-step for hinge loss with dual coupling ``K``: returns ``(W, α)``.

    Exact coordinate ascent on the *true* dual (not the members' separable bound): every step
    maximises ``D`` in one ``α_ij`` and updates all of W through ``K``. Sweeps visit the samples
    in a seeded random order until the duality gap (checked every 5 sweeps) is below ``tol``.
    ``alphas`` warm-starts it (the Ω-step does not change the dual's feasible set).
    """
    rng = np.random.default_rng(seed)
    m = len(sets)
    al = [np.zeros(len(y)) for _, y in sets] if alphas is None else [a.copy() for a in alphas]
    rows = [list(x) for x, _ in sets]
    ys = [y.tolist() for _, y in sets]
    norms = [np.einsum("ij,ij->i", x, x).tolist() for x, _ in sets]
    krows = [kernel[i].copy() for i in range(m)]
    work = [a.tolist() for a in al]

    def exact_w() -> np.ndarray:
        u = np.stack(
            [x.T @ np.asarray(a) / len(a) for (x, _), a in zip(sets, work, strict=True)], 1
        )
        return u @ kernel

    w = exact_w()
    for sweep in range(max_sweeps):
        if sweep % 5 == 0:
            w = exact_w()  # drop the rounding the incremental updates accumulated
            if _gap(sets, [np.asarray(a) for a in work], w, "hinge") <= tol:
                break
        for i in range(m):
            n, kii, ki = len(work[i]), kernel[i, i], krows[i]
            ai, yi, ri, ni = work[i], ys[i], rows[i], norms[i]
            for j in rng.permutation(n).tolist():
                if ni[j] == 0.0:
                    continue
                xj = ri[j]
                b = yi[j] * ai[j] + (1.0 - yi[j] * float(xj @ w[:, i])) * n / (kii * ni[j])
                delta = yi[j] * min(1.0, max(0.0, b)) - ai[j]
                if delta != 0.0:
                    ai[j] += delta
                    w += np.multiply.outer(xj * (delta / n), ki)
    return exact_w(), [np.asarray(a) for a in work]


@dataclass
class MTRLSolution:
    """Result of :func:`fit_mtrl`.

    Attributes
    ----------
    w, omega
        The task models (``d × m``) and the task covariance at the optimum.
    objective
        ``P(W, Ω)`` at the returned pair.
    outer_iterations
        Ω-steps taken.
    omega_change
        Relative change of the last plain Ω-step (the fixed-point residual).
    history
        Objective after each W-step.
    joint_gap
        Relative duality gap of the whole problem at the returned pair (``λ1 = 0``; ``None``
        otherwise): the certified distance to the optimum.
    converged
        Whether the stopping rule was met within ``max_outer`` Ω-steps.
    """

    w: np.ndarray
    omega: np.ndarray
    objective: float
    outer_iterations: int
    omega_change: float
    history: list[float] = field(default_factory=list)
    joint_gap: float | None = None
    converged: bool = False


def mtrl_objective(
    sets: TaskSets, w: np.ndarray, omega: np.ndarray, loss: str, lam1: float, lam2: float
) -> float:
    """``P(W, Ω)`` evaluated directly from the data."""
    _, metric = coupling(omega, lam1, lam2)
    means = [float(np.mean(loss_values(loss, y, x @ w[:, i]))) for i, (x, y) in enumerate(sets)]
    return primal_value(np.array(means), w, metric)


def _dual_pieces(
    sets: TaskSets, w: np.ndarray, alphas: Sequence[np.ndarray] | None, loss: str
) -> tuple[float, np.ndarray]:
    """(Σ_i mean conjugate, U) of the dual variables of a solved W-step: for squared loss the
    optimal α are the residuals ``y - Xw``, for hinge loss the solver's."""
    conj, cols = 0.0, []
    for i, (x, y) in enumerate(sets):
        a = y - x @ w[:, i] if loss == "squared" or alphas is None else alphas[i]
        conj += float(np.mean(_conj(loss, y, a)))
        cols.append(x.T @ a / len(y))
    return conj, np.stack(cols, axis=1)


def fit_mtrl(
    sets: TaskSets,
    loss: str,
    lam1: float,
    lam2: float,
    floor: float = 0.1,
    tol: float = 1e-10,
    max_outer: int = 2000,
    omega_init: np.ndarray | None = None,
    gap_tol: float = 1e-10,
    *,
    memory: int = 5,
    start: float | None = 0.1,
    stage_tol: float = 1e-6,
    joint_tol: float = 1e-8,
) -> MTRLSolution:
    """Centralised MTRL: exact W-steps alternated with Ω-steps (:class:`~.omega.OmegaSteps`).

    With ``λ1 = 0`` it stops once the relative duality gap of the whole problem is below
    ``joint_tol`` at the target floor (stages of the floor continuation from ``start`` end at
    ``stage_tol``); with ``λ1 > 0`` (no certificate) once the relative ΔΩ is below ``tol``.
    ``memory`` is Anderson acceleration's (0: plain closed-form steps). The returned W is the
    exact W-step for the returned Ω, i.e. the same kind of point the distributed run ends at
    (for hinge loss: solved to a duality gap of ``gap_tol``).
    """
    check_loss(loss)
    m = len(sets)
    certified = lam1 == 0
    steps = OmegaSteps(floor, memory, start if certified and omega_init is None else None)
    omega = np.eye(m) / m if omega_init is None else np.array(omega_init, dtype=np.float64)
    alphas: list[np.ndarray] | None = None
    history: list[float] = []
    change, it, joint = float("inf"), 0, None

    def w_step(om: np.ndarray, gap_tol: float) -> np.ndarray:
        nonlocal alphas
        k, metric = coupling(om, lam1, lam2)
        if loss == "squared":
            return squared_w_step(sets, metric)
        w, alphas = hinge_w_step(sets, k, alphas, tol=gap_tol)
        return w

    def certificate(w: np.ndarray, f: float, at: float) -> float:
        conj, u = _dual_pieces(sets, w, alphas, loss)
        return relative_gap(f, joint_dual_value(conj, u, at, lam2))

    # Hinge W-steps are iterative: solve them loosely while Ω still moves a lot, tightly at
    # the end (the final pair is always an exact W-step for the final Ω).
    final_tol = gap_tol
    w = w_step(omega, 1e-3 if loss == "hinge" else gap_tol)
    history.append(mtrl_objective(sets, w, omega, loss, lam1, lam2))
    converged = False
    while it < max_outer:
        if certified:
            joint = certificate(w, history[-1], steps.floor)
            if steps.final_stage and joint <= joint_tol:
                converged = True
                break
            if not steps.final_stage and joint <= stage_tol:
                steps.lower_floor()
        new, change, _ = steps.step(omega, w, history[-1])
        if not certified and change < tol:
            converged = True
            break
        omega, it = new, it + 1
        w = w_step(omega, float(np.clip(0.01 * change, final_tol, 1e-3)))
        history.append(mtrl_objective(sets, w, omega, loss, lam1, lam2))
    if loss == "hinge":
        w = w_step(omega, final_tol)
        history[-1] = mtrl_objective(sets, w, omega, loss, lam1, lam2)
    if certified:
        joint = certificate(w, history[-1], floor)
    return MTRLSolution(w, omega, history[-1], it, change, history, joint, converged)


def alternation(cfg: Any) -> dict[str, Any]:
    """:func:`fit_mtrl`'s keyword arguments from an
    :class:`~consortium.algorithms.mtl.config.AlternationConfig`."""
    return {
        "memory": cfg.acceleration,
        "start": cfg.continuation_start,
        "stage_tol": cfg.stage_tolerance,
        "joint_tol": cfg.joint_tolerance,
    }


def fit_single_task(
    x: np.ndarray, y: np.ndarray, loss: str, lam: float, gap_tol: float = 1e-8
) -> np.ndarray:
    """One task alone: ``min_w (1/n) Σ ℓ(y_j, wᵀx_j) + (λ/2)‖w‖²`` (ridge or a linear SVM;
    the SVM's dual is solved to a duality gap of ``gap_tol``)."""
    check_loss(loss)
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    if loss == "squared":
        import scipy.linalg

        d = x.shape[1]
        return scipy.linalg.solve(
            x.T @ x / len(y) + lam * np.eye(d), x.T @ y / len(y), assume_a="pos"
        )
    w, _ = hinge_w_step([(x, y)], np.array([[1.0 / lam]]), tol=gap_tol)
    return w[:, 0]


def fit_global(sets: TaskSets, loss: str, lam: float, gap_tol: float = 1e-8) -> np.ndarray:
    """One model for every task: ``min_w Σ_i (1/n_i) Σ_j ℓ(y_ij, wᵀx_ij) + (λ/2)‖w‖²``.

    Each task's loss is its mean, as in the MTRL objective, so this is MTRL with all ``w_i``
    tied; the coupling is ``K = J/λ`` (``J`` all ones). Returns the ``d``-vector.
    """
    check_loss(loss)
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    if loss == "squared":
        import scipy.linalg

        d = sets[0][0].shape[1]
        a = sum(x.T @ x / len(y) for x, y in sets) + lam * np.eye(d)
        b = sum(x.T @ y / len(y) for x, y in sets)
        return scipy.linalg.solve(a, b, assume_a="pos")
    m = len(sets)
    w, _ = hinge_w_step(sets, np.full((m, m), 1.0 / lam), tol=gap_tol)
    return w[:, 0]
