import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import (
    ClientApp,
    Grid,
    Message,
    ReplySpec,
    TooFewReplies,
    Workflow,
    run_workflow,
)
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[8])


def fedavg(x, y, rounds=3, **kw):
    cfg = FedAvgConfig(rounds=rounds, local=LocalTrainConfig(lr=0.1, batch_size=8), **kw)
    return FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")


def test_crashing_and_malicious_members_are_dropped_and_the_round_goes_on(tiny_federation, caplog):
    x, y, views = tiny_federation
    app = supervised_client_app(model_fn, "cpu")
    honest = app._handlers["train"]

    def sometimes_bad(msg, ctx):
        if ctx.client_id == 1:
            raise RuntimeError("disk full")
        reply = honest(msg, ctx)
        if ctx.client_id == 2:
            first = next(iter(reply.arrays))
            reply.arrays[first] = reply.arrays[first] * np.nan
        if ctx.client_id == 3:
            first = next(iter(reply.arrays))
            reply.arrays[first] = reply.arrays[first].astype(np.float64)
        return reply

    app._handlers["train"] = sometimes_bad
    grid = LocalRuntime(app, lambda c: views[c], 4, seed=0)
    result = run_workflow(fedavg(x, y, evaluate_clients=False), grid, progress=False)
    first = result.rounds[0]
    assert first["replies"] == 1
    assert "disk full" in first["failures"]["1"]
    assert "NaN" in first["rejected"]["2"]
    assert "dtype" in first["rejected"]["3"]
    assert all(np.isfinite(v).all() for v in result.final_arrays.values())
    assert "rejected reply of member 2" in caplog.text


def test_simulated_dropouts_are_seeded_and_min_replies_skips_rounds(tiny_federation):
    x, y, views = tiny_federation

    def run(seed, min_replies):
        grid = LocalRuntime(
            supervised_client_app(model_fn, "cpu"),
            lambda c: views[c],
            4,
            seed=seed,
            failure_rate=0.5,
            min_replies=min_replies,
        )
        return run_workflow(fedavg(x, y, rounds=6, evaluate_clients=False), grid, progress=False)

    a, b = run(0, 1), run(0, 1)
    assert [r["failures"] for r in a.rounds] == [r["failures"] for r in b.rounds]
    assert sum(len(r["failures"]) for r in a.rounds) > 0
    strict = run(0, 4)
    skipped = [r for r in strict.rounds if "skipped" in r]
    assert skipped and strict.summary["rounds_skipped"] == len(skipped)
    assert all(r["replies"] < 4 for r in skipped)


def test_same_seed_gives_identical_weights(tiny_federation):
    x, y, views = tiny_federation

    def final(seed):
        grid = LocalRuntime(
            supervised_client_app(model_fn, "cpu"), lambda c: views[c], 4, seed=seed
        )
        return run_workflow(fedavg(x, y, clients_per_round=2), grid, progress=False).final_arrays

    a, b, c = final(3), final(3), final(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


class CountingWorkflow(Workflow):
    """A stateful test workflow: members count the rounds they served in their own state."""

    name = "counting"
    num_rounds = 4

    def __init__(self):
        self.totals = {}

    def run_round(self, grid: Grid, rnd: int):
        replies = grid.send({c: Message("tick") for c in grid.sample(2)}, expect=ReplySpec({}))
        self.totals = {**self.totals, **{c: r.metrics["count"] for c, r in replies.items()}}
        return {"seen": len(replies)}

    def state_dict(self):
        return {"totals": self.totals}

    def load_state_dict(self, state):
        self.totals = dict(state["totals"])


def counting_app():
    app = ClientApp()

    @app.on("tick")
    def tick(msg, ctx):
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        return msg.reply(metrics={"count": ctx.state["count"]})

    return app


def test_member_state_persists_across_rounds():
    grid = LocalRuntime(counting_app(), lambda c: None, 3, seed=0)
    wf = CountingWorkflow()
    result = run_workflow(wf, grid, progress=False)
    sampled = [r for r in result.rounds]
    assert len(sampled) == 4
    for cid in range(3):
        times_sampled = sum(1 for r in result.rounds if str(cid) in r["bytes_down_by_client"])
        assert grid.client_state(cid).get("count", 0) == times_sampled
    assert sum(grid.client_state(c).get("count", 0) for c in range(3)) == 8


def test_unknown_message_kind_is_a_member_failure():
    grid = LocalRuntime(counting_app(), lambda c: None, 2, seed=0, min_replies=0)
    grid.start_round(1)
    replies = grid.send({0: Message("explain")})
    assert replies == {}
    assert "no handler" in grid.record.failures[0]


def test_too_few_replies_raises_from_send():
    grid = LocalRuntime(counting_app(), lambda c: None, 2, seed=0, min_replies=2)
    grid.start_round(1)
    with pytest.raises(TooFewReplies):
        grid.send({0: Message("tick"), 1: Message("nope")})


def test_bad_runtime_arguments():
    with pytest.raises(ValueError):
        LocalRuntime(counting_app(), lambda c: None, 0)
    with pytest.raises(ValueError):
        LocalRuntime(counting_app(), lambda c: None, 2, failure_rate=1.0)
    grid = LocalRuntime(counting_app(), lambda c: None, 2)
    with pytest.raises(KeyError):
        grid.send({5: Message("tick")})
