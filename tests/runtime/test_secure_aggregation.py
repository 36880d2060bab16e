"""Secure aggregation on the Flower runtime, without processes: Flower's own ``secaggplus_mod``
on the members and its ``SecAggPlusWorkflow`` on the server, over the fake grid of
``test_flower_apps`` (every message crosses Flower's wire format). The same over a real
SuperLink is in ``test_flower_runtimes.py``."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Error
from flwr.app import Message as FlowerMessage
from flwr.common.constant import ErrorCode

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.core import Message, TooFewReplies, run_workflow
from consortium.core.run import RunStopped
from consortium.experiment import experiment_from_dict
from consortium.experiment.flower import experiment_server_run, write_flower_app
from consortium.runtime import LocalRuntime
from consortium.runtime.flower import (
    AppSettings,
    FlowerGrid,
    Member,
    SecureAggregation,
    flower_client_app,
)

from .test_flower_apps import FakeFlowerGrid, fedavg, flower_identity, model_fn, partitions

__all__ = ["flower_identity"]  # a fixture, used by name


class FakeGrid(FakeFlowerGrid):
    """The fake grid plus what SecAggPlusWorkflow uses (``send_and_receive``, the run), and
    Flower's handling of a client app that raises (a mod may): an error reply."""

    run = types.SimpleNamespace(run_id=7)

    def __init__(self, app, *args, **kwargs):
        def guarded(message, context):
            try:
                return app(message, context)
            except Exception as err:
                error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(err))
                return FlowerMessage(error, reply_to=message)

        super().__init__(guarded, *args, **kwargs)
        self.replies = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = self.pull_messages(self.push_messages(list(messages)))
        self.replies += replies
        return replies


def secure_members(views, mods=()):
    return flower_client_app(
        lambda s: Member(supervised_client_app(model_fn, "cpu"), views.__getitem__),
        secure_aggregation=True,
        mods=mods,
    )


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_fedavg_with_secagg_equals_in_process_up_to_the_quantisation(
    tiny_federation, flower_identity
):
    x, y, views = tiny_federation
    expected = run_workflow(
        fedavg(x, y, rounds=1, evaluate_clients=False),
        LocalRuntime(supervised_client_app(model_fn, "cpu"), lambda c: views[c], 4, seed=3),
        progress=False,
    )
    fake = FakeGrid(secure_members(views), partitions(4))
    sizes = {c: len(views[c].train_indices) + len(views[c].test_indices) for c in range(4)}
    settings = SecureAggregation()
    grid = FlowerGrid(fake, 4, seed=3, data_sizes=sizes, secure_aggregation=settings)
    workflow = fedavg(x, y, rounds=1, evaluate_clients=False, secure_aggregation=True)
    result = run_workflow(workflow, grid, progress=False)

    line = result.rounds[-1]
    assert line["secure_aggregation"] is True and line["replies"] == 4
    assert line["train_loss"] == pytest.approx(expected.rounds[-1]["train_loss"])
    # Each member's weighted update entry is rounded to a step of 2·clip/Q; the mean divides
    # the sum of those errors by the sum of the weights (each about its share of the largest).
    weights = [len(views[c].train_indices) / max(sizes.values()) for c in range(4)]
    bound = 4 * settings.quantisation_step / sum(weights)
    diff = max_diff(result.final_arrays, expected.final_arrays)
    assert 0 < diff <= bound, (diff, bound)  # quantised, so not bit for bit, but that close
    # The server never held a member's arrays: every reply that came back was emptied.
    train = [r for r in fake.replies if r.metadata.message_type == "train"]
    assert len(train) == 4 * 4  # four members, four stages
    assert all(len(rec) == 0 for r in train for rec in r.content.array_records.values())


@pytest.mark.parametrize("rounds", [1, 3])
def test_an_equal_weight_secure_mean_over_sampled_members(tiny_federation, flower_identity, rounds):
    x, y, views = tiny_federation
    kw = {"rounds": rounds, "weighted": False, "evaluate_clients": False, "clients_per_round": 3}
    expected = run_workflow(
        fedavg(x, y, **kw),
        LocalRuntime(supervised_client_app(model_fn, "cpu"), lambda c: views[c], 4, seed=1),
        progress=False,
    )
    settings = SecureAggregation()
    grid = FlowerGrid(
        FakeGrid(secure_members(views), partitions(4)), 4, seed=1, secure_aggregation=settings
    )
    result = run_workflow(fedavg(x, y, **kw, secure_aggregation=True), grid, progress=False)
    assert [r["sampled"] for r in result.rounds] == [r["sampled"] for r in expected.rounds]
    assert [r["replies"] for r in result.rounds] == [3] * rounds
    diff = max_diff(result.final_arrays, expected.final_arrays)
    if rounds == 1:  # weights 1 of max_weight 1: the mean's error is below one step
        assert 0 < diff <= settings.quantisation_step
    else:  # later rounds train from a model that differs by that much
        assert diff < 1e-3
        assert result.summary["test_accuracy"] == pytest.approx(
            expected.summary["test_accuracy"], abs=0.05
        )


def test_a_member_with_the_mod_sends_no_plain_update(tiny_federation, flower_identity):
    x, y, views = tiny_federation
    grid = FlowerGrid(FakeGrid(secure_members(views), partitions(4)), 4, seed=0)
    grid.connect()
    weights = fedavg(x, y).evaluator.scratch.model_fn().state_dict()
    arrays = {k: v.numpy() for k, v in weights.items()}
    msg = Message("train", arrays=arrays, config={"lr": 0.1, "prox_mu": 0.0})
    with pytest.raises(TooFewReplies):
        grid.send({c: msg for c in range(4)})  # a plain train message, outside the protocol
    assert sorted(grid.record.failures) == [0, 1, 2, 3] and not grid.record.replied
    assert all("secaggplus_configs" in r for r in grid.record.failures.values())


def test_one_member_cannot_be_summed_securely(tiny_federation, flower_identity):
    _, _, views = tiny_federation
    grid = FlowerGrid(
        FakeGrid(secure_members(views), partitions(4)), 4, seed=0,
        secure_aggregation=SecureAggregation(),
    )  # fmt: skip
    grid.connect()
    msg = Message("train", arrays={"w": np.zeros(2, np.float32)}, config={})
    with pytest.raises(TooFewReplies, match="secure aggregation failed"):
        grid.send_mean({0: msg})
    assert "halted" in grid.record.failures[0]


def test_a_member_inside_the_sum_that_claims_too_many_samples_spoils_the_round(
    tiny_federation, flower_identity
):
    x, y, views = tiny_federation
    small = {c: 5 for c in range(4)}  # what the server knows; members train on 30 each
    grid = FlowerGrid(
        FakeGrid(secure_members(views), partitions(4)), 4, seed=0, data_sizes=small,
        secure_aggregation=SecureAggregation(max_weight=100.0),
    )  # fmt: skip
    # Its only round dropped, the run stops (no round succeeded) and says why.
    with pytest.raises(RunStopped, match="round 1: member 0 is inside the secure sum") as err:
        run_workflow(
            fedavg(x, y, rounds=1, secure_aggregation=True, evaluate_clients=False),
            grid,
            progress=False,
        )
    assert err.value.summary["rounds_skipped"] == 1


def test_mods_wrap_every_handler(tiny_federation, flower_identity):
    x, y, views = tiny_federation
    seen = []

    def spy(message, context, call_next):
        seen.append(message.metadata.message_type)
        return call_next(message, context)

    app = flower_client_app(
        lambda s: Member(supervised_client_app(model_fn, "cpu"), views.__getitem__), mods=[spy]
    )
    run_workflow(
        fedavg(x, y, rounds=1), FlowerGrid(FakeGrid(app, partitions(4)), 4), progress=False
    )
    assert {"query.consortium_identify", "train", "evaluate"} <= set(seen)


def test_secure_aggregation_is_an_option_of_the_fedavg_family_only():
    with pytest.raises(Exception, match="cannot apply the 'median' rule"):
        experiment_from_dict(
            {"name": "x", "fedavg": {"secure_aggregation": True, "aggregation": {"rule": "median"}}}
        )
    with pytest.raises(Exception, match="secure_aggregation"):
        experiment_from_dict(
            {"name": "x", "methods": ["dp_fedavg"], "dp_fedavg": {"secure_aggregation": True}}
        )
    for method in ("cgsv", "aequa", "scaffold"):
        with pytest.raises(Exception, match="secure_aggregation: unknown key"):
            experiment_from_dict(
                {"name": "x", "methods": [method], method: {"secure_aggregation": True}}
            )


def test_secure_experiments_become_secure_apps(tmp_path):
    exp = experiment_from_dict(
        {
            "name": "sa",
            "methods": ["fedavg", "fedprox"],
            "data": {"dataset": "digits", "num_clients": 3},
            "fedavg": {"secure_aggregation": True},
        }
    )
    import tomllib

    for method, client in (("fedavg", "clientapp_secure"), ("fedprox", "clientapp")):
        path = write_flower_app(exp, tmp_path / method, method=method)
        app = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]
        assert app["components"]["clientapp"] == f"consortium.experiment.flower:{client}"
        run = experiment_server_run(AppSettings(app["config"]))
        assert (run.secure_aggregation is not None) == (method == "fedavg")
