"""The pieces DMTRL is built from: the Ω-step, σ', the coupling and the local dual solver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from consortium.algorithms.mtl import coupling, omega_step
from consortium.algorithms.mtl.objective import (
    conjugate_values,
    local_sdca,
    loss_values,
    sigma_bound,
)


def test_omega_step_is_mtrl_closed_form_when_the_floor_is_inactive():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 4))  # full rank, well spread: no eigenvalue hits the floor
    s2, v = np.linalg.eigh(w.T @ w)
    root = (v * np.sqrt(s2)) @ v.T
    expected = root / np.trace(root)
    assert np.allclose(omega_step(w, 1e-3), expected, atol=1e-12)


@pytest.mark.parametrize("floor", [0.05, 0.3, 0.9])
def test_omega_step_minimises_the_trace_term_on_the_floored_set(floor):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 6)) * np.array([5, 3, 1, 0.1, 0.01, 0])  # rank 3, 6 tasks
    m = w.shape[1]
    omega = omega_step(w, floor)
    e = np.linalg.eigvalsh(omega)
    assert np.isclose(np.trace(omega), 1.0) and e.min() >= floor / m * (1 - 1e-9)

    def value(om):
        return np.trace(w @ np.linalg.solve(om, w.T))

    best = value(omega)
    for _ in range(200):  # random feasible competitors never do better
        q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        lam = floor / m + rng.dirichlet(np.ones(m)) * (1 - floor)
        assert value((q * lam) @ q.T) >= best * (1 - 1e-9)


def test_coupling_inverts_and_sigma_bounds_order():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 5))
    omega = a @ a.T + 0.1 * np.eye(5)
    omega /= np.trace(omega)
    k, metric = coupling(omega, 0.2, 0.5)
    assert np.allclose(k @ metric, np.eye(5), atol=1e-10)
    assert np.allclose(metric, 0.2 * np.eye(5) + 0.5 * np.linalg.inv(omega), atol=1e-8)
    safe, rowsum = sigma_bound(k, "safe"), sigma_bound(k, "rowsum")
    assert 1.0 <= safe <= rowsum + 1e-12 and safe <= 5 + 1e-12
    assert sigma_bound(np.eye(4) / 3, "safe") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive definite"):
        coupling(np.diag([1.0, 0.0]), 0.0, 1.0)


@pytest.mark.parametrize("loss", ["squared", "hinge"])
def test_local_sdca_increases_the_local_subproblem(loss):
    rng = np.random.default_rng(3)
    n, d = 40, 6
    x = rng.standard_normal((n, d))
    y = np.sign(rng.standard_normal(n)) if loss == "hinge" else rng.standard_normal(n)
    w = rng.standard_normal(d) * 0.1
    alpha = np.zeros(n)
    scale = 2.5

    def local(da):
        du = x.T @ da / n
        conj = conjugate_values(loss, y, alpha + da).mean()
        return -conj - w @ du - 0.5 * scale * du @ du

    values = [local(np.zeros(n))]
    for steps in (1, 10, 100, 1000):
        da, du = local_sdca(x, y, alpha, w, scale, steps, np.random.default_rng(0), loss)
        assert np.allclose(du, x.T @ da / n)
        if loss == "hinge":  # the conjugate is finite only in the box
            assert np.all((y * (alpha + da) >= -1e-12) & (y * (alpha + da) <= 1 + 1e-12))
        values.append(local(da))
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert values[-1] > values[0] + 1e-3
    assert loss_values(loss, y, x @ w).shape == (n,)
