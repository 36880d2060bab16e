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
