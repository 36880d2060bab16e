"""DMTRL against its contract: weak duality, the centralised optimum, what crosses the wire,
where α lives, the learned task structure, dropouts and bit-identical resume."""

from __future__ import annotations

import numpy as np
import pytest

from consortium.algorithms.mtl import DMTRL, DMTRLConfig, fit_mtrl, mtl_client_app, mtrl_objective
from consortium.algorithms.mtl.client import TRAIN
from consortium.core import load_checkpoint, run_workflow
from consortium.core.message import Message
from consortium.data.multitask import synthetic_tasks
from consortium.metrics.mtl import correlation_from_covariance
from consortium.runtime import LocalRuntime

LAM2, FLOOR = 0.1, 0.3


@pytest.fixture(scope="module")
def small():
    """7 tasks in 5 dimensions: a cluster of 3, one task negated against it, a pair, one loner."""
    return synthetic_tasks(
        clusters=(3, 2),
        negated=(1, 0),
        unrelated=1,
        dim=5,
        train_samples=(12, 30),
        test_samples=40,
        noise=0.5,
        seed=3,
    )


def make(data, rounds=400, failure_rate=0.0, seed=0, **kw):
    options = dict(
        rounds=rounds,
        lambda2=LAM2,
        omega_floor=FLOOR,
        local_passes=1.0,
        gap_tolerance=1e-12,
        omega_tolerance=1e-11,
        joint_tolerance=1e-11,
    )
    options.update(kw)
    wf = DMTRL(DMTRLConfig(**options), data.dim, data.kind, data.true_correlation)
    grid = LocalRuntime(
        mtl_client_app(), data.client, data.num_clients, seed=seed, failure_rate=failure_rate
    )
    return wf, grid


@pytest.fixture(scope="module")
def converged(small):
    wf, grid = make(small)
    return run_workflow(wf, grid, progress=False), wf, grid


@pytest.fixture(scope="module")
def centralised(small):
    return fit_mtrl(small.train_sets(), "squared", 0.0, LAM2, floor=FLOOR, tol=1e-12)


def test_dual_never_exceeds_primal(converged):
    result, _, _ = converged
    lines = [r for r in result.rounds if "primal" in r]
    assert len(lines) > 20
    for r in lines:  # a rounding margin only: the gap itself falls to ~1e-16 at the end
        assert r["dual"] <= r["primal"] + 1e-12 * abs(r["primal"]), r["round"]
    assert lines[0]["duality_gap"] > 1e-3  # the check is not vacuous
    assert any(r.get("omega_step") for r in result.rounds)


def test_matches_the_centralised_optimum(small, converged, centralised):
    result, _, _ = converged
    assert result.summary["converged_round"] is not None
    w, omega = result.final_arrays["W"], result.final_arrays["Omega"]
    objective = mtrl_objective(small.train_sets(), w, omega, "squared", 0.0, LAM2)
    assert abs(objective - centralised.objective) <= 1e-6 * abs(centralised.objective)
    assert np.abs(w - centralised.w).max() < 1e-4
    assert np.abs(omega - centralised.omega).max() < 1e-4
    assert abs(result.summary["objective"] - objective) <= 1e-9 * objective


def test_upload_is_exactly_d_floats_per_member(small, converged):
    result, _, _ = converged
    d = small.dim
    # What one reply of a train round costs: d float64 plus the scalar metrics it carries.
    probe = Message(TRAIN).reply(
        arrays={"delta_u": np.zeros(d)},
        metrics={
            k: 0.0
            for k in (
                "loss_mean",
                "conjugate_mean",
                "test_n",
                "test_sum_y",
                "test_sum_y2",
                "test_sum_r",
                "test_sum_r2",
            )
        },
    )
    train_lines = [r for r in result.rounds if r.get("replies")]
    assert train_lines
    for r in train_lines:
        assert set(r["bytes_up_by_client"]) == {str(c) for c in range(small.num_clients)}
        assert set(r["bytes_up_by_client"].values()) == {probe.nbytes}


def test_alpha_never_leaves_the_member(small):
    app = mtl_client_app()
    replies = []
    for kind, handler in list(app._handlers.items()):

        def spy(msg, ctx, handler=handler):
            reply = handler(msg, ctx)
            replies.append((ctx.client_id, ctx.data.num_train, reply))
            return reply

        app._handlers[kind] = spy
    wf, _ = make(small, rounds=30)
    grid = LocalRuntime(app, small.client, small.num_clients, seed=0)
    run_workflow(wf, grid, progress=False)
    assert replies
    for cid, n, reply in replies:
        assert n != small.dim  # shapes alone could not hide α
        if reply.kind == TRAIN:
            assert set(reply.arrays) == {"delta_u"}
            assert reply.arrays["delta_u"].shape == (small.dim,)
        else:
            assert reply.arrays == {}
        assert all(np.ndim(v) == 0 for v in reply.metrics.values())
        assert len(reply.metrics) <= 10
        alpha = grid.client_state(cid)["alpha"]
        assert alpha.shape == (n,) and np.abs(alpha).sum() > 0  # it exists, at home


def test_recovers_the_true_sign_pattern():
    data = synthetic_tasks(
        clusters=(3, 2),
        negated=(2, 0),
        unrelated=1,
        dim=8,
        train_samples=(30, 50),
        test_samples=20,
        noise=0.5,
        seed=1,
    )
    wf, grid = make(data, rounds=600, gap_tolerance=1e-8, omega_tolerance=1e-6)
    result = run_workflow(wf, grid, progress=False)
    learned = correlation_from_covariance(result.final_arrays["Omega"])
    true = data.true_correlation
    related = (np.abs(true) > 0.5) & ~np.eye(len(true), dtype=bool)
    assert related.sum() >= 10 and (true[related] < 0).sum() >= 6
    assert np.array_equal(np.sign(learned[related]), np.sign(true[related]))
    assert result.summary["correlation_sign_agreement"] == 1.0


def test_dropouts_and_rejections_keep_members_and_server_consistent(small, centralised):
    # Members drop out at random, and some replies are rejected after the member already
    # computed its update (NaN in Δu): that update must be discarded on both sides. The
    # corruption is drawn at random per (round, member): a pattern that spoils some reply in
    # *every* round would leave no round in which the objective (a sum over all members) can
    # be measured, and convergence could never be certified.
    app = mtl_client_app()
    honest = app._handlers[TRAIN]

    def sometimes_corrupt(msg, ctx):
        reply = honest(msg, ctx)
        if np.random.default_rng([ctx.round, ctx.client_id, 99]).random() < 0.1:
            reply.arrays["delta_u"] = reply.arrays["delta_u"] * np.nan
        return reply

    app._handlers[TRAIN] = sometimes_corrupt
    wf, _ = make(small, rounds=900)
    grid = LocalRuntime(app, small.client, small.num_clients, seed=5, failure_rate=0.2)
    result = run_workflow(wf, grid, progress=False)
    assert sum(len(r["failures"]) for r in result.rounds) > 50
    assert sum(len(r["rejected"]) for r in result.rounds) > 50
    # Member and server agree: the server's u_i is X_i α_i / n_i for the α_i the member kept
    # (a pending change counts only if the server applied that round).
    for cid, task in enumerate(small.tasks):
        state = grid.client_state(cid)
        alpha = state["alpha"]
        if state.get("pending_round") == wf.applied.get(cid):
            alpha = alpha + state["pending"]
        u = task.x_train.T @ alpha / task.num_train
        assert np.abs(u - wf.u[:, cid]).max() < 1e-12
    assert result.summary["converged_round"] is not None
    assert abs(result.summary["objective"] - centralised.objective) <= 1e-6 * centralised.objective
    assert np.abs(result.final_arrays["W"] - centralised.w).max() < 1e-4
    assert result.summary["relative_gap"] < 1e-9


class Crash(Exception):
    pass


def test_resume_after_a_crash_is_bit_identical(small, tmp_path):
    full = run_workflow(*make(small, rounds=60), run_dir=tmp_path / "full", progress=False)

    def crash_after_25(rnd, _):
        if rnd == 25:
            raise Crash

    with pytest.raises(Crash):
        run_workflow(
            *make(small, rounds=60),
            run_dir=tmp_path / "cut",
            progress=False,
            callbacks=[crash_after_25],
        )
    assert load_checkpoint(tmp_path / "cut")["next_round"] == 25
    resumed = run_workflow(
        *make(small, rounds=60), run_dir=tmp_path / "cut", resume=True, progress=False
    )
    assert resumed.resumed_from == 24
    for key in ("W", "Omega"):
        assert np.array_equal(full.final_arrays[key], resumed.final_arrays[key]), key
    assert full.summary["duality_gap"] == resumed.summary["duality_gap"]


def test_hinge_loss_classification_runs_with_weak_duality():
    data = synthetic_tasks(
        clusters=(3,),
        negated=(1,),
        unrelated=1,
        dim=6,
        train_samples=(20, 40),
        test_samples=50,
        kind="classification",
        seed=2,
    )
    wf, grid = make(data, rounds=150, loss="hinge", gap_tolerance=1e-6, omega_tolerance=1e-6)
    result = run_workflow(wf, grid, progress=False)
    lines = [r for r in result.rounds if "primal" in r]
    assert all(r["dual"] <= r["primal"] + 1e-12 * abs(r["primal"]) for r in lines)
    assert lines[-1]["relative_gap"] < 1e-2 < lines[0]["relative_gap"]
    assert 0.7 < result.summary["mean_client_accuracy"] <= 1.0
    assert set(result.summary["client_accuracy"]) == {str(c) for c in range(data.num_clients)}


def test_omega_updates_zero_keeps_the_identity(small):
    wf, grid = make(small, rounds=80, omega_updates=0, gap_tolerance=1e-6)
    result = run_workflow(wf, grid, progress=False)
    m = small.num_clients
    assert np.array_equal(result.final_arrays["Omega"], np.eye(m) / m)
    assert result.summary["omega_steps"] == 0
    assert result.summary["rounds_to_gap"] is not None
    assert result.summary["converged_round"] == result.summary["rounds_to_gap"] + 1
    assert all(r.get("idle") for r in result.rounds[result.summary["converged_round"] :])
