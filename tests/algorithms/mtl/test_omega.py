"""The Ω-steps that make MTRL's alternation reach its optimum: the joint certificate, the
projection, Anderson acceleration with its safeguard, and the floor continuation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from consortium.algorithms.mtl import fit_mtrl, mtrl_objective, omega_step
from consortium.algorithms.mtl.objective import conjugate_values
from consortium.algorithms.mtl.omega import (
    OmegaSteps,
    joint_dual_value,
    project_omega,
    relative_gap,
)
from consortium.data.multitask import synthetic_tasks

LAM2 = 0.05


@pytest.fixture(scope="module")
def tasks():
    """8 tasks in 6 dimensions with clear structure: a small floor is active at the optimum."""
    return synthetic_tasks(
        clusters=(3, 2), negated=(1, 0), unrelated=2, dim=6, train_samples=(10, 25), seed=5
    )


@pytest.mark.parametrize("floor", [1e-6, 0.1, 0.5])
def test_joint_dual_value_is_a_lower_bound_on_every_feasible_pair(tasks, floor):
    """Weak duality for the whole problem: G(α) <= P(W, Ω) for any α and any feasible (W, Ω)."""
    rng = np.random.default_rng(0)
    sets = tasks.train_sets()
    m = len(sets)
    for _ in range(30):
        w = rng.standard_normal((tasks.dim, m))
        alphas = [rng.standard_normal(len(y)) for _, y in sets]
        u = np.stack([x.T @ a / len(y) for a, (x, y) in zip(alphas, sets, strict=True)], axis=1)
        conj = sum(
            float(np.mean(conjugate_values("squared", y, a)))
            for a, (_, y) in zip(alphas, sets, strict=True)
        )
        lower = joint_dual_value(conj, u, floor, LAM2)
        q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        lam = floor / m + rng.dirichlet(np.ones(m)) * (1 - floor)
        omega = (q * lam) @ q.T
        assert lower <= mtrl_objective(sets, w, omega, "squared", 0.0, LAM2) + 1e-9


@pytest.mark.parametrize("floor, tol", [(1e-6, 1e-6), (1e-3, 1e-8), (0.1, 1e-9)])
def test_the_certificate_closes_at_the_optimum_and_not_before(tasks, floor, tol):
    sets = tasks.train_sets()
    sol = fit_mtrl(sets, "squared", 0.0, LAM2, floor, joint_tol=tol, max_outer=1000)
    assert sol.converged and sol.joint_gap is not None and 0 <= sol.joint_gap <= tol
    # The certified pair is optimal: a much longer run does not get lower.
    longer = fit_mtrl(sets, "squared", 0.0, LAM2, floor, joint_tol=1e-3 * tol, max_outer=1500)
    assert sol.objective <= longer.objective * (1 + tol)
    # Ω = I/m with its exact W-step is feasible but far from optimal: a gap the certificate sees.
    start = fit_mtrl(sets, "squared", 0.0, LAM2, floor, max_outer=1, start=None, memory=0)
    assert start.joint_gap is not None and start.joint_gap > 1e-3
    assert start.objective > sol.objective


def test_projection_is_feasible_idempotent_and_nearest():
    rng = np.random.default_rng(3)
    m, floor = 6, 0.2
    a = rng.standard_normal((m, m))
    p = project_omega(a, floor)
    e = np.linalg.eigvalsh(p)
    assert np.isclose(np.trace(p), 1.0) and e.min() >= floor / m * (1 - 1e-9)
    assert np.allclose(p, p.T)
    assert np.allclose(project_omega(p, floor), p, atol=1e-10)
    best = np.linalg.norm(p - 0.5 * (a + a.T))
    for _ in range(300):  # no feasible competitor is nearer to (the symmetric part of) a
        q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        lam = floor / m + rng.dirichlet(np.ones(m)) * (1 - floor)
        assert np.linalg.norm((q * lam) @ q.T - 0.5 * (a + a.T)) >= best - 1e-9


def test_without_memory_the_step_is_the_closed_form():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 4))
    omega = np.eye(4) / 4
    steps = OmegaSteps(0.1, memory=0, start=None)
    new, change, how = steps.step(omega, w, objective=1.0)
    assert how == "plain" and np.allclose(new, omega_step(w, 0.1))
    assert change == pytest.approx(np.linalg.norm(new - omega) / np.linalg.norm(omega))


def test_an_extrapolation_that_raises_the_objective_is_undone():
    rng = np.random.default_rng(5)
    steps = OmegaSteps(0.1, memory=3, start=None)
    omega = np.eye(4) / 4
    kinds = []
    for obj in (10.0, 9.0):  # two accepted steps build the memory
        new, _, how = steps.step(omega, rng.standard_normal((5, 4)), obj)
        kinds.append(how)
        omega = new
    assert kinds == ["plain", "extrapolated"]
    fallback = steps.fallback.copy()
    back, _, how = steps.step(omega, rng.standard_normal((5, 4)), objective=9.5)  # worse
    assert how == "rejected" and np.array_equal(back, fallback)
    assert steps.points == [] and steps.fallback is None  # the memory starts afresh


def test_continuation_lowers_the_floor_in_stages_to_the_target():
    steps = OmegaSteps(1e-6, memory=5, start=0.1)
    floors = [steps.floor]
    while not steps.final_stage:
        steps.lower_floor()
        floors.append(steps.floor)
    assert floors[0] == 0.1 and floors[-1] == 1e-6
    assert all(b < a for a, b in itertools.pairwise(floors)) and len(floors) == 6
    assert OmegaSteps(0.3, start=0.1).final_stage  # a start below the target: no stages


def test_near_the_closed_form_acceleration_reaches_what_plain_steps_do_not(tasks):
    """With floor 1e-6 the plain alternation stalls above the optimum; the certified run gets
    there in far fewer Ω-steps, and its Ω is the closed-form step of its W (a fixed point)."""
    sets = tasks.train_sets()
    fast = fit_mtrl(sets, "squared", 0.0, LAM2, 1e-6, joint_tol=1e-6, max_outer=2000)
    assert fast.converged and fast.outer_iterations < 300
    slow = fit_mtrl(
        sets,
        "squared",
        0.0,
        LAM2,
        1e-6,
        joint_tol=1e-6,
        max_outer=10 * fast.outer_iterations,
        memory=0,
        start=None,
    )
    assert not slow.converged and slow.objective > fast.objective
    assert relative_gap(slow.objective, fast.objective) > 1e-4  # well above the certified gap
    assert np.allclose(omega_step(fast.w, 1e-6), fast.omega, atol=1e-4)
