"""SCAFFOLD: option-I (default) and option-II control variates, kept at the members and committed
only when the server used the reply; the first round (zero controls) is FedAvg's; the reported
train_loss is the cross-entropy; a skewed federation with one tiny member stays finite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.registry import MethodContext, get_method
from consortium.algorithms.scaffold import (
    SCAFFOLD,
    SCAFFOLDConfig,
    budget_steps,
    scaffold_client_app,
)
from consortium.algorithms.scaffold.client import CONTROL
from consortium.core import ClientContext, Message, run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, evaluate

SGD = LocalTrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.0)


@pytest.fixture(scope="module")
def data():
    return build_federated_data("digits", num_clients=4, scheme="dirichlet", alpha=0.5, seed=0)


def model_fn_for(data):
    return lambda: build_model("mlp", data.input_shape, data.num_classes, hidden=[16])


def grid_seed(grid, cid):
    grid.start_round(1)
    return grid.client_seed(cid)


def one_round(wf, app, data, seed=0):
    grid = LocalRuntime(app, data.client, data.num_clients, seed=seed)
    grid.start_round(0)
    wf.setup(grid)
    before = {k: v.copy() for k, v in wf.weights.items()}
    grid.start_round(1)
    wf.run_round(grid, 1)
    return before, grid


def test_first_round_is_fedavg_and_controls_follow_option_two(data):
    mf = model_fn_for(data)
    cfg = SCAFFOLDConfig(rounds=2, local=SGD, evaluate_clients=False)
    scaffold = SCAFFOLD(cfg, mf, data.test_x, data.test_y, "cpu")
    x0, grid = one_round(scaffold, scaffold_client_app(mf, "cpu"), data)
    fed_cfg = FedAvgConfig(rounds=2, local=SGD, weighted=False, evaluate_clients=False)
    fedavg = FedAvg(fed_cfg, mf, data.test_x, data.test_y, "cpu")
    one_round(fedavg, supervised_client_app(mf, "cpu"), data)
    for k in fedavg.weights:  # c = c_i = 0 in round 1: the same local steps, the same mean
        np.testing.assert_allclose(scaffold.weights[k], fedavg.weights[k], rtol=0, atol=1e-6)
    # Option II: c_i+ = (x - y_i)/(K_i η) (c = c_i = 0), and c = (1/N) Σ_i c_i+.
    n = data.num_clients
    train = supervised_client_app(mf, "cpu")
    expected = {k: np.zeros_like(v) for k, v in scaffold.control.items()}
    for cid in range(n):
        ctx = ClientContext(cid, data.client(cid), {}, round=1, seed=grid_seed(grid, cid))
        msg = Message("train", arrays=x0, config={**SGD.as_config(), "prox_mu": 0.0})
        y_i = train.handle(msg, ctx).arrays
        steps = -(-len(data.client(cid).train_indices) // SGD.batch_size)
        pending = grid.client_state(cid)["pending"]["c_i"]
        for k in expected:
            c_new = (x0[k] - y_i[k]) / (steps * SGD.lr)
            np.testing.assert_allclose(pending[k], c_new, rtol=1e-4, atol=1e-5)
            expected[k] += c_new / n
    for k, v in scaffold.control.items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-7)
    assert any(np.abs(v).max() > 0 for v in scaffold.control.values())
    assert scaffold.accepted == dict.fromkeys(range(n), 1)


def test_a_members_control_is_committed_only_when_the_server_used_its_reply(data):
    mf = model_fn_for(data)
    app = scaffold_client_app(mf, "cpu")
    weights = {
        k: v for k, v in build_model("mlp", data.input_shape, 10, hidden=[16]).state_dict().items()
    }
    arrays = {k: v.numpy() for k, v in weights.items()}
    zeros = {CONTROL + k: np.zeros_like(v) for k, v in arrays.items()}
    state: dict = {}

    def send(rnd, accepted):
        ctx = ClientContext(0, data.client(0), state, round=rnd, seed=rnd)
        msg = Message(
            "scaffold_train",
            arrays={**arrays, **zeros},
            config={**SGD.as_config(), "accepted_round": accepted},
        )
        return app.handle(msg, ctx)

    reply = send(1, -1)
    assert "pending" in state and all(np.all(v == 0) for v in state["c_i"].values())
    assert set(reply.arrays) == set(arrays) | set(zeros)
    first = state["pending"]["c_i"]
    send(2, -1)  # the server never used round 1's reply: c_i stays zero
    assert all(np.all(v == 0) for v in state["c_i"].values())
    pending_2 = state["pending"]["c_i"]
    send(3, 2)  # round 2's reply was used: its c_i is committed
    for k in first:
        np.testing.assert_array_equal(state["c_i"][k], pending_2[k])


def test_resume_is_bit_identical_and_beats_nothing_less_than_it_trains(data, tmp_path):
    mf = model_fn_for(data)

    def make():
        cfg = SCAFFOLDConfig(rounds=4, local=SGD, eval_every=2, evaluate_clients=False)
        wf = SCAFFOLD(cfg, mf, data.test_x, data.test_y, "cpu")
        return wf, LocalRuntime(scaffold_client_app(mf, "cpu"), data.client, 4, seed=3)

    full = run_workflow(*make(), run_dir=tmp_path / "full", progress=False)

    def crash(rnd, _):
        if rnd == 2:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        run_workflow(*make(), run_dir=tmp_path / "cut", progress=False, callbacks=[crash])
    resumed = run_workflow(*make(), run_dir=tmp_path / "cut", resume=True, progress=False)
    for k in full.final_arrays:
        np.testing.assert_array_equal(full.final_arrays[k], resumed.final_arrays[k])
    assert full.summary["test_accuracy"] == resumed.summary["test_accuracy"] > 0.3


def _send(app, data, cid, arrays, control, config, state=None, rnd=1):
    ctx = ClientContext(cid, data.client(cid), {} if state is None else state, round=rnd, seed=7)
    msg = Message(
        "scaffold_train",
        arrays={**arrays, **{CONTROL + k: v for k, v in control.items()}},
        config={**config, "accepted_round": -1},
    )
    return app.handle(msg, ctx), ctx


def _x0(data):
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[16])
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_train_loss_is_the_cross_entropy_not_the_corrected_surrogate(data):
    """The linear term <c - c_i, y> steers the gradient but is not a data loss: with a large
    correction the reported train_loss is still the cross-entropy of the batch it trained on
    (one step over all samples: the cross-entropy at x)."""
    mf = model_fn_for(data)
    x0 = _x0(data)
    n = len(data.client(0).train_indices)
    one_step = {
        **LocalTrainConfig(batch_size=n, lr=0.1, momentum=0.0).as_config(),
        "local_steps": 1,
    }
    big = {k: np.full_like(v, 5.0) for k, v in x0.items()}
    reply, _ = _send(scaffold_client_app(mf, "cpu"), data, 0, x0, big, one_step)
    model = mf()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in x0.items()})
    member = data.client(0)
    ce = evaluate(model, member.x, member.y, np.asarray(member.train_indices))["loss"]
    assert reply.metrics["train_loss"] == pytest.approx(ce, rel=1e-5)
    assert reply.metrics["steps"] == 1
    # the correction did act: the step differs from plain SGD by lr·(c - c_i) = 0.1 · 5
    moved = {k: x0[k] - reply.arrays[k] for k in x0}
    _, plain_ctx = _send(
        scaffold_client_app(mf, "cpu"),
        data,
        0,
        x0,
        {k: np.zeros_like(v) for k, v in x0.items()},
        one_step,
    )
    plain = plain_ctx.state["pending"]["c_i"]  # (x - y)/(1·lr) = the plain gradient at x
    for k in x0:
        np.testing.assert_allclose(moved[k], 0.1 * (plain[k] + 5.0), rtol=1e-4, atol=1e-5)


def test_every_member_takes_the_same_k_steps_whatever_its_size(data):
    """Algorithm 1's K is one number: a member with six samples and one with hundreds both take
    exactly K steps (K·η_l no longer grows with a member's data), and option II's c_i+ is the
    mean of those K steps."""
    mf = model_fn_for(data)
    x0 = _x0(data)
    zeros = {k: np.zeros_like(v) for k, v in x0.items()}
    tiny = dataclasses.replace(
        data, client_train=(np.asarray(data.client(0).train_indices)[:6], *data.client_train[1:])
    )
    cfg = {**SGD.as_config(), "local_steps": 9}
    app = scaffold_client_app(mf, "cpu")
    for fed, cid in ((tiny, 0), (data, 1)):
        reply, ctx = _send(app, fed, cid, x0, zeros, cfg)
        assert reply.metrics["steps"] == 9
        assert reply.metrics["num_examples"] == len(fed.client(cid).train_indices)
        pending = ctx.state["pending"]["c_i"]
        for k in x0:
            np.testing.assert_allclose(
                pending[k], (x0[k] - reply.arrays[k]) / (9 * SGD.lr), rtol=1e-4, atol=1e-6
            )


def test_the_builder_sets_k_to_the_average_members_share_of_the_fedavg_budget(data):
    sizes = [len(data.client(c).train_indices) for c in range(data.num_clients)]
    local = LocalTrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.0)
    ctx = MethodContext(data=data, model_fn=model_fn_for(data), device="cpu")
    spec = get_method("scaffold")
    wf, _ = spec.build(ctx, SCAFFOLDConfig(rounds=2, local=local))
    assert wf.config.local_steps == budget_steps(sizes, 2, 16) == round(2 * np.mean(sizes) / 16)
    wf, _ = spec.build(ctx, SCAFFOLDConfig(rounds=2, local=local, local_steps=3))
    assert wf.config.local_steps == 3  # an explicit K is kept


def test_a_skewed_federation_with_a_six_sample_member_stays_finite_and_learns():
    """One member alone holds three classes, one holds six samples, plain SGD at a large step:
    every round's train_loss is a finite, non-negative cross-entropy and the model learns."""
    base = build_federated_data("digits", num_clients=4, scheme="iid", seed=0)
    pool = np.concatenate(base.client_train)
    y = base.pool_y[pool]
    rng = np.random.default_rng(0)
    tiny = rng.choice(pool[y == 3], 6, replace=False)
    rest = np.setdiff1d(pool[y >= 3], tiny)
    rng.shuffle(rest)
    parts = [pool[y < 3], tiny, *np.array_split(rest, 3)]
    fed = dataclasses.replace(
        base,
        client_train=tuple(parts),
        client_test=tuple(np.array([], dtype=np.int64) for _ in parts),
    )
    mf = lambda: build_model("cnn", fed.input_shape, fed.num_classes)  # noqa: E731
    local = LocalTrainConfig(epochs=2, batch_size=8, lr=0.2, momentum=0.0)
    ctx = MethodContext(data=fed, model_fn=mf, device="cpu")
    cfg = SCAFFOLDConfig(rounds=8, local=local, eval_every=1, evaluate_clients=False)
    wf, app = get_method("scaffold").build(ctx, cfg)
    rows: list[dict] = []
    run_workflow(
        wf,
        LocalRuntime(app, fed.client, len(parts), seed=0),
        progress=False,
        callbacks=[lambda rnd, m: rows.append(m)],
    )
    losses = [r["train_loss"] for r in rows]
    assert len(losses) == 8 and all(np.isfinite(v) and v >= 0 for v in losses)
    assert all(np.isfinite(r["control_norm"]) for r in rows)
    assert rows[-1]["test_accuracy"] > 0.7 > rows[0]["test_accuracy"]
