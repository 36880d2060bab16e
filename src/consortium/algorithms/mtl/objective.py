"""The MTRL objective, its dual, the Ω-step and the local dual solver (pure numpy, no messages).

Objective (Zhang & Yeung, UAI 2010; docs/methods/dmtrl.md), ``W = [w_1 … w_m]`` (``d × m``)::

    P(W, Ω) = Σ_i (1/n_i) Σ_j ℓ(y_ij, w_iᵀ x_ij) + (λ1/2) ‖W‖² + (λ2/2) tr(W Ω⁻¹ Wᵀ)
    s.t.  Ω ⪰ ε I,  tr Ω = 1                      (ε: the eigenvalue floor, ``omega_floor``)

With ``M = λ1 I + λ2 Ω⁻¹`` and ``K = M⁻¹ = Ω (λ1 Ω + λ2 I)⁻¹`` the W-step (Ω fixed) has the dual

    D(α) = -Σ_i (1/n_i) Σ_j ℓ*(-α_ij) - ½ tr(U K Uᵀ),    u_i = X_iᵀ α_i / n_i,   W(α) = U K

and ``P(W(α)) - D(α) >= 0`` is the duality gap every round reports. Everything here is shared by
the distributed workflow (members run :func:`local_sdca`, the server the rest) and the
centralised references (``solvers.py``), so both optimise literally the same function.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LossName = Literal["squared", "hinge"]
LOSSES: tuple[str, ...] = ("squared", "hinge")
SigmaRule = Literal["safe", "rowsum"]


def check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def loss_values(loss: str, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-sample loss ``ℓ(y, z)``: ``½(z - y)²`` (squared) or ``max(0, 1 - y z)`` (hinge)."""
    if loss == "squared":
        return 0.5 * (z - y) ** 2
    return np.maximum(0.0, 1.0 - y * z)


def conjugate_values(loss: str, y: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-sample ``ℓ*(-α)``: ``α²/2 - α y`` (squared) or ``-α y`` with ``α y ∈ [0, 1]`` (hinge).

    The hinge conjugate is infinite outside the box; the local solver never leaves it.
    """
    if loss == "squared":
        return 0.5 * alpha**2 - alpha * y
    return -alpha * y


def predict(loss: str, z: np.ndarray) -> np.ndarray:
    """Prediction from the linear score: the score itself, or its sign (ties: +1) for hinge."""
    if loss == "squared":
        return z
    return np.where(z >= 0, 1.0, -1.0)


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def coupling(omega: np.ndarray, lam1: float, lam2: float) -> tuple[np.ndarray, np.ndarray]:
    """``(K, M)``: ``M = λ1 I + λ2 Ω⁻¹`` couples the task models in the primal, ``K = M⁻¹`` in
    the dual. Computed from one eigendecomposition of Ω, so no explicit inverse is formed."""
    e, v = np.linalg.eigh(_sym(omega))
    if e.min() <= 0:
        raise ValueError(f"Ω must be positive definite (smallest eigenvalue {e.min():.3g})")
    k = (v * (e / (lam1 * e + lam2))) @ v.T
    m = (v * (lam1 + lam2 / e)) @ v.T
    return _sym(k), _sym(m)


def omega_step(w: np.ndarray, floor: float) -> np.ndarray:
    """Closed-form Ω-step: ``argmin tr(W Ω⁻¹ Wᵀ)`` over ``{Ω ⪰ (floor/m) I, tr Ω = 1}``.

    Without the floor this is MTRL's ``(WᵀW)^{1/2} / tr((WᵀW)^{1/2})``. With it, Ω keeps the
    eigenvectors of ``WᵀW`` and its eigenvalues become ``max(floor/m, s_k / c)`` (``s_k`` the
    singular values of W, ``c`` chosen so they sum to 1): the exact minimiser over the floored
    set, so the joint problem stays one convex problem whose optimum the distributed and the
    centralised solvers share. The floor is relative to the uniform eigenvalue ``1/m``, so one
    value suits 10 tasks and 160. It also keeps the alternation fast: with a tiny floor the
    Ω-step pins W to a subspace that then rotates only very slowly (thousands of Ω-steps on
    12 tasks with MOCHA's 1e-7 floor on ``WᵀW``; tens to hundreds with ``floor = 0.1``).
    """
    m = w.shape[1]
    if not 0 < floor < 1:
        raise ValueError(f"omega_floor must be in (0, 1) (a fraction of 1/m), got {floor}")
    s2, v = np.linalg.eigh(_sym(w.T @ w))
    s = np.sqrt(np.clip(s2, 0.0, None))
    return _sym((v * _floored_simplex(s, floor / m)) @ v.T)


def _floored_simplex(s: np.ndarray, floor: float) -> np.ndarray:
    """``e = max(floor, s / c)`` with ``Σ e = 1`` (minimises ``Σ s²/e`` on the floored simplex)."""
    m = len(s)
    if s.max() <= 0:
        return np.full(m, 1.0 / m)
    order = np.argsort(-s)
    ss = s[order]
    e_sorted = np.full(m, 1.0 / m)
    for t in range(1, m + 1):  # t = how many eigenvalues sit above the floor
        c = ss[:t].sum() / (1.0 - (m - t) * floor)
        if ss[t - 1] / c >= floor * (1 - 1e-12) and (t == m or ss[t] / c <= floor * (1 + 1e-12)):
            e_sorted = np.where(np.arange(m) < t, ss / c, floor)
            break
    e = np.empty(m)
    e[order] = e_sorted
    return e / e.sum()


def sigma_bound(k: np.ndarray, rule: SigmaRule = "safe") -> float:
    """Smallest safe σ' for *adding* the members' updates (docs/methods/dmtrl.md).

    ``safe``: ``λ_max(D^{-1/2} K D^{-1/2})`` with ``D = diag(K)``, the tight bound under which
    the members' separable subproblems lower-bound the true dual; ``rowsum``: MOCHA's cheaper
    ``max_i Σ_k |K_ik| / K_ii`` (never smaller).
    """
    diag = np.diag(k)
    if rule == "rowsum":
        return float(np.max(np.abs(k).sum(axis=1) / diag))
    if rule == "safe":
        scale = 1.0 / np.sqrt(diag)
        return float(np.linalg.eigvalsh(_sym(k * np.outer(scale, scale))).max())
    raise ValueError(f"sigma rule must be 'safe' or 'rowsum', got {rule!r}")


def primal_value(loss_means: np.ndarray, w: np.ndarray, metric: np.ndarray) -> float:
    """``P = Σ_i L_i + ½ tr(W M Wᵀ)`` from the members' mean losses ``L_i``."""
    return float(np.sum(loss_means) + 0.5 * np.sum(w * (w @ metric)))


def dual_value(conjugate_means: np.ndarray, u: np.ndarray, k: np.ndarray) -> float:
    """``D = -Σ_i C_i - ½ tr(U K Uᵀ)`` from the members' mean conjugates ``C_i``."""
    return float(-np.sum(conjugate_means) - 0.5 * np.sum(u * (u @ k)))


def local_sdca(
    x: np.ndarray,
    y: np.ndarray,
    alpha: np.ndarray,
    w: np.ndarray,
    scale: float,
    steps: int,
    rng: np.random.Generator,
    loss: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` coordinate-ascent steps on member ``i``'s local subproblem

    ``G_i(Δα) = -(1/n) Σ_j ℓ*(-α_j - Δα_j) - w_iᵀ Δu - (scale/2) ‖Δu‖²``, ``Δu = Xᵀ Δα / n``,

    with ``scale = σ' K_ii``; coordinates are drawn uniformly with replacement (SDCA/CoCoA).
    Each step maximises ``G_i`` exactly in one coordinate (closed forms in docs/methods/dmtrl.md).

    Returns
    -------
    (delta_alpha, delta_u)
        The change of the member's dual variables (kept by the member) and ``Xᵀ Δα / n``
        (the only thing it sends), recomputed exactly from ``Δα`` at the end.
    """
    n = len(y)
    q = scale / n
    rows = list(x)
    base = (x @ w).tolist()
    norms = np.einsum("ij,ij->i", x, x).tolist()
    ys = y.tolist()
    a = alpha.tolist()
    du = np.zeros(x.shape[1])
    squared = loss == "squared"
    for j in rng.integers(0, n, size=steps).tolist():
        xj = rows[j]
        z = base[j] + scale * float(xj @ du)
        aj, yj = a[j], ys[j]
        if squared:
            delta = (yj - aj - z) / (1.0 + q * norms[j])
        else:
            if norms[j] == 0.0:
                continue
            b = yj * aj + (1.0 - yj * z) / (q * norms[j])
            delta = yj * min(1.0, max(0.0, b)) - aj
        if delta != 0.0:
            a[j] = aj + delta
            du += (delta / n) * xj
    delta_alpha = np.asarray(a) - alpha
    return delta_alpha, x.T @ delta_alpha / n


def task_pieces(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray | None, loss: str
) -> dict[str, float]:
    """A member's share of the objectives: mean loss at ``w`` and mean conjugate at ``α``."""
    out = {"loss_mean": float(np.mean(loss_values(loss, y, x @ w)))}
    if alpha is not None:
        out["conjugate_mean"] = float(np.mean(conjugate_values(loss, y, alpha)))
    return out
