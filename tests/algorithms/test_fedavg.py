"""FedAvg end to end on real data (digits): the accuracy the foundation promises."""

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig, FedProx, FedProxConfig
from consortium.algorithms.reference import Standalone, StandaloneConfig, standalone_client_app
from consortium.core import run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

LOCAL = LocalTrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9)


def run(data, workflow, app):
    grid = LocalRuntime(app, data.client, data.num_clients, seed=0)
    return run_workflow(workflow, grid, progress=False)


def model_fn_for(data):
    return lambda: build_model("cnn", data.input_shape, data.num_classes)


@pytest.mark.slow
def test_fedavg_reaches_90_percent_on_iid_digits():
    data = build_federated_data("digits", num_clients=10, scheme="iid", seed=0)
    mf = model_fn_for(data)
    cfg = FedAvgConfig(rounds=30, local=LOCAL, eval_every=10)
    result = run(
        data, FedAvg(cfg, mf, data.test_x, data.test_y, "cpu"), supervised_client_app(mf, "cpu")
    )
    assert result.summary["test_accuracy"] >= 0.90
    assert result.summary["mean_client_accuracy"] >= 0.90


@pytest.mark.slow
def test_fedavg_beats_standalone_under_dirichlet_skew():
    data = build_federated_data(
        "digits", num_clients=10, scheme="dirichlet", alpha=0.3, min_size=20, seed=0
    )
    mf = model_fn_for(data)
    fed = run(
        data,
        FedAvg(FedAvgConfig(rounds=30, local=LOCAL, eval_every=30), mf, data.test_x, data.test_y),
        supervised_client_app(mf, "cpu"),
    )
    alone = run(
        data,
        Standalone(StandaloneConfig(rounds=30, local=LOCAL), mf, data.test_x, data.test_y),
        standalone_client_app(mf, "cpu"),
    )
    fed_acc, alone_acc = fed.summary["test_accuracy"], alone.summary["test_accuracy"]
    # On the global test set (all classes) the shared model must win clearly. (On members' own
    # skewed test views a standalone model that knows only its few classes is competitive.)
    assert fed_acc > alone_acc + 0.1, (fed_acc, alone_acc)
    assert len(alone.summary["client_global_test_accuracy"]) == data.num_clients


def test_fedprox_term_keeps_members_closer_to_the_global_model():
    data = build_federated_data("digits", num_clients=4, scheme="dirichlet", alpha=0.3, seed=1)
    mf = model_fn_for(data)

    def drift(mu):
        cfg = FedProxConfig(
            rounds=1, local=LocalTrainConfig(epochs=3, lr=0.1), prox_mu=mu, evaluate_clients=False
        )
        wf = FedProx(cfg, mf, data.test_x[:0], data.test_y[:0], "cpu")
        grid = LocalRuntime(supervised_client_app(mf, "cpu"), data.client, data.num_clients, seed=0)
        grid.start_round(0)
        wf.setup(grid)
        start = dict(wf.weights)
        grid.start_round(1)
        wf.run_round(grid, 1)
        return sum(float(np.sum((wf.weights[k] - start[k]) ** 2)) for k in start)

    assert drift(1.0) < drift(0.0)


# -- server momentum (FedAvgM) ----------------------------------------------------------------


def tiny_mlp():
    return build_model("mlp", (1, 4, 4), 2, hidden=[4])


def momentum_workflow(beta, rounds=3):
    """FedAvg with server momentum ``beta`` (``None``: the option left at its default)."""
    extra = {} if beta is None else {"server_momentum": beta}
    cfg = FedAvgConfig(rounds=rounds, local=LocalTrainConfig(lr=0.1), **extra)
    mf = tiny_mlp
    return FedAvg(cfg, mf, np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64), "cpu")


def test_server_momentum_accumulates_the_moves_of_the_average():
    from consortium.core.aggregation import Update

    wf = momentum_workflow(0.5)
    wf.weights = {"w": np.zeros(2, np.float32), "n": np.array([3], np.int64)}
    wf.velocity = {}
    target = {"w": np.ones(2, np.float32), "n": np.array([7], np.int64)}
    first = wf.aggregate([Update(target, 1.0)])
    assert first["w"].tolist() == [1.0, 1.0] and first["n"].tolist() == [7]  # v = Δ = 1
    wf.weights = first
    second = wf.aggregate([Update(target, 1.0)])
    # Δ = 0 now, but v = 0.5·1 + 0: the model keeps moving in the earlier direction
    assert second["w"].tolist() == [1.5, 1.5] and wf.velocity["w"].tolist() == [0.5, 0.5]
    assert second["w"].dtype == np.float32


def test_zero_momentum_is_plain_fedavg_bit_for_bit(tiny_federation):
    *_, views = tiny_federation

    def final(beta):
        wf = momentum_workflow(beta)
        app = supervised_client_app(wf.model_fn, "cpu")
        grid = LocalRuntime(app, lambda c: views[c], 4, seed=3, failure_rate=0.3)
        return run_workflow(wf, grid, progress=False).final_arrays

    plain, zero, moved = final(None), final(0.0), final(0.9)
    assert all(np.array_equal(plain[k], zero[k]) for k in plain)
    assert any(not np.array_equal(plain[k], moved[k]) for k in plain)


def test_server_momentum_resumes_bit_for_bit(tiny_federation, tmp_path):
    *_, views = tiny_federation

    def grid_for(wf):
        app = supervised_client_app(wf.model_fn, "cpu")
        return LocalRuntime(app, lambda c: views[c], 4, seed=3)

    whole = momentum_workflow(0.9, rounds=4)
    expected = run_workflow(whole, grid_for(whole), progress=False).final_arrays

    class Stop(Exception):
        pass

    def stop_after_2(rnd, _):
        if rnd == 2:
            raise Stop

    cut = momentum_workflow(0.9, rounds=4)
    with pytest.raises(Stop):
        run_workflow(cut, grid_for(cut), run_dir=tmp_path, progress=False, callbacks=[stop_after_2])
    again = momentum_workflow(0.9, rounds=4)
    got = run_workflow(again, grid_for(again), run_dir=tmp_path, resume=True, progress=False)
    assert all(np.array_equal(expected[k], got.final_arrays[k]) for k in expected)
