"""A FedAvg model trained on digits, shared by the unlearning tests (trained once)."""

import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.unlearning import add_unlearning_handlers
from consortium.core import run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

TRAIN = LocalTrainConfig(epochs=2, lr=0.05)
ROUNDS = 12  # test_verification.py retrains with the same settings


@pytest.fixture(scope="session")
def trained():
    data = build_federated_data("digits", num_clients=4, scheme="iid", seed=0)

    def model_fn():
        return build_model("cnn", data.input_shape, data.num_classes)

    cfg = FedAvgConfig(rounds=ROUNDS, local=TRAIN, eval_every=ROUNDS, evaluate_clients=False)
    grid = LocalRuntime(supervised_client_app(model_fn, "cpu"), data.client, 4, seed=0)
    result = run_workflow(
        FedAvg(cfg, model_fn, data.test_x, data.test_y, "cpu"), grid, progress=False
    )
    assert result.summary["test_accuracy"] > 0.85
    return data, model_fn, result.final_arrays


@pytest.fixture(scope="session")
def make_grid():
    """``make_grid(data, model_fn, runtime_class)``: members that answer every unlearning
    message."""

    def make(data, model_fn, cls=LocalRuntime):
        app = add_unlearning_handlers(supervised_client_app(model_fn, "cpu"), model_fn, "cpu")
        return cls(app, data.client, data.num_clients, seed=0)

    return make
