"""The aggregation options reach every method that averages: FedAvg and SCAFFOLD through the
``Averaging.aggregate`` hook, FedRA's per-block average, selective unlearning's masked average;
and they stop a scaled-update attack end to end."""

import numpy as np
import pytest

from consortium.algorithms.base.config import AggregationOptions
from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.fedra.config import FedRAConfig
from consortium.algorithms.fedra.workflow import FedRA
from consortium.algorithms.scaffold import SCAFFOLD, SCAFFOLDConfig
from consortium.algorithms.unlearning.config import (
    SelectiveOptions,
    SelectiveUnlearningConfig,
    UnlearnConfig,
)
from consortium.config import ConfigError
from consortium.core import ClientApp, Message, Update, run_workflow
from consortium.core.aggregation import (
    clip_updates,
    coordinate_median,
    krum_select,
    trimmed_mean,
)
from consortium.data import build_federated_data
from consortium.experiment import experiment_from_dict
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


@pytest.mark.parametrize("workflow", [FedAvg, SCAFFOLD])
def test_averaging_methods_use_the_configured_rule(workflow):
    cfg_cls = FedAvgConfig if workflow is FedAvg else SCAFFOLDConfig
    cfg = cfg_cls(aggregation={"rule": "median"})
    wf = workflow(cfg, lambda: None, np.zeros((0, 1)), np.zeros(0, np.int64))
    wf.weights = {"w": np.zeros(3, np.float32)}
    updates = [Update({"w": np.full(3, x, np.float32)}, 10.0) for x in (1.0, 2.0, 1e6)]
    np.testing.assert_array_equal(wf.aggregate(updates)["w"], [2.0, 2.0, 2.0])
    plain = workflow(cfg_cls(), lambda: None, np.zeros((0, 1)), np.zeros(0, np.int64))
    plain.weights = wf.weights
    assert plain.aggregate(updates)["w"][0] > 1e5


def test_fedra_averages_each_block_with_the_configured_rule():
    wf = FedRA.__new__(FedRA)  # the aggregation step alone: no backbone needed
    wf.config = FedRAConfig(capacities=[1], aggregation={"rule": "trimmed_mean"})
    wf.adapters = {"block0": np.zeros(2), "block1": np.full(2, 5.0)}
    replies = {
        c: Message("fedra_train", {"block0": np.full(2, x)}, {}, {"num_examples": 1})
        for c, x in enumerate([1.0, 2.0, 3.0, 4.0, 100.0])
    }
    wf.aggregate(replies, np.ones((5, 2), bool), list(range(5)))
    expected = trimmed_mean([Update(r.arrays) for r in replies.values()], wf.adapters, 0.2)
    np.testing.assert_array_equal(wf.adapters["block0"], expected["block0"])
    np.testing.assert_allclose(wf.adapters["block0"], [3.0, 3.0])
    np.testing.assert_array_equal(wf.adapters["block1"], [5.0, 5.0])  # nobody trained it


def test_unlearning_takes_the_rule_from_its_request_table():
    request = UnlearnConfig(class_id=1, aggregation={"rule": "median"})
    shared = request.model_dump(include=set(SelectiveOptions.model_fields))
    assert SelectiveUnlearningConfig(**shared).aggregation.rule == "median"


def test_options_are_declared_once_and_checked_as_toml():
    for cfg in (
        FedAvgConfig(),
        SCAFFOLDConfig(),
        FedRAConfig(capacities=[1]),
        UnlearnConfig(class_id=0),
    ):
        assert isinstance(cfg.aggregation, AggregationOptions)
    exp = experiment_from_dict(
        {"name": "x", "fedavg": {"aggregation": {"rule": "multi_krum", "byzantine": 2}}}
    )
    assert exp.method_options["fedavg"].aggregation.byzantine == 2
    bad = [
        ({"rule": "mode"}, r"^fedavg.aggregation.rule: Input should be 'mean', 'median'"),
        ({"trim_fraction": 0.5}, r"^fedavg.aggregation.trim_fraction: "),
        ({"clip_norm": "mean"}, r"^fedavg.aggregation.clip_norm: .*positive number or 'median'"),
        ({"clip_norm": -1}, r"^fedavg.aggregation.clip_norm: "),
        ({"krum": 1}, r"^fedavg.aggregation.krum: unknown key"),
    ]
    for table, match in bad:
        with pytest.raises(ConfigError, match=match):
            experiment_from_dict({"name": "x", "fedavg": {"aggregation": table}})


def test_multi_krum_and_krum_options_reach_the_core():
    opts = AggregationOptions(rule="multi_krum", byzantine=1, keep=2)
    ref = {"w": np.zeros(1)}
    ups = [Update({"w": np.array([v])}) for v in (0.0, 0.1, 0.2, 50.0)]
    chosen = krum_select(ups, ref, 1, keep=2)
    assert opts.aggregate(ups, ref)["w"][0] == pytest.approx(
        np.mean([ups[i].arrays["w"][0] for i in chosen])
    )
    med = AggregationOptions(rule="median", clip_norm="median").aggregate(ups, ref)
    clipped = clip_updates(ups, ref, "median")  # norms 0, .1, .2, 50: clipped at 0.15
    assert med["w"][0] == pytest.approx(coordinate_median(clipped, ref)["w"][0]) == 0.125


def scaled(honest: ClientApp, hostile: set[int]) -> ClientApp:
    """A hostile member: its honest update, scaled by 100 (the benchmark's attack)."""
    app = ClientApp()

    @app.on("train")
    def train(msg, ctx):
        reply = honest.handle(msg, ctx)
        if ctx.client_id not in hostile:
            return reply
        arrays = {k: w + 100 * (reply.arrays[k] - w) for k, w in msg.arrays.items()}
        return msg.reply(arrays=arrays, metrics=reply.metrics)

    @app.on("evaluate")
    def evaluate(msg, ctx):
        return honest.handle(msg, ctx)

    return app


@pytest.mark.slow
def test_two_scaled_members_of_ten_break_the_mean_but_not_the_robust_rules():
    data = build_federated_data("digits", num_clients=10, scheme="iid", seed=0)

    def mf():
        return build_model("mlp", data.input_shape, data.num_classes, hidden=(32,))

    def accuracy(rule, hostile):
        cfg = FedAvgConfig(
            rounds=8,
            local=LocalTrainConfig(epochs=1, batch_size=16, lr=0.1),
            eval_every=8,
            evaluate_clients=False,
            aggregation={"rule": rule, "byzantine": 2, "trim_fraction": 0.2},
        )
        app = scaled(supervised_client_app(mf, "cpu"), hostile)
        grid = LocalRuntime(app, data.client, data.num_clients, seed=0)
        wf = FedAvg(cfg, mf, data.test_x, data.test_y, "cpu")
        return run_workflow(wf, grid, progress=False).summary["test_accuracy"]

    clean = accuracy("mean", set())
    assert clean > 0.85
    assert accuracy("mean", {0, 1}) < 0.3
    for rule in ("median", "trimmed_mean", "multi_krum"):
        assert accuracy(rule, {0, 1}) > clean - 0.03, rule
