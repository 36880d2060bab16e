"""SCAFFOLD: option-I (default) and option-II control variates, kept at the members and committed
only when the server used the reply; the first round (zero controls) is FedAvg's; the reported
train_loss is the cross-entropy; a skewed federation with one tiny member stays finite."""

from __future__ import annotations

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.scaffold import SCAFFOLD, SCAFFOLDConfig, scaffold_client_app
from consortium.algorithms.scaffold.client import CONTROL
from consortium.core import ClientContext, Message, run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

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
