"""Members that attack the server: every malformed or poisoned reply is rejected or counted
as that member's failure, the run completes, and the model stays finite.

One test per defect found when the in-process federation was probed as an attacker would
(masked arrays hiding NaN, huge or negative sample counts, unexpected array keys, member code
raising SystemExit, config strings that dodge the size limit, members writing into the
server's arrays, members that never answer)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core import ClientApp, InvalidReply, Message, ReplySpec, run_workflow
from consortium.core.validation import check_message
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

ROUNDS = 2


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[8])


def run_with(attack, views, x, y, *, rounds=ROUNDS, **grid_options):
    """FedAvg with 4 members, member 0 replaced by ``attack(honest_reply, msg, ctx)``."""
    app = supervised_client_app(model_fn, "cpu")
    honest = app._handlers["train"]

    def train(msg, ctx):
        if ctx.client_id != 0:
            return honest(msg, ctx)
        return attack(honest, msg, ctx)

    app._handlers["train"] = train
    cfg = FedAvgConfig(
        rounds=rounds, local=LocalTrainConfig(lr=0.1, batch_size=8), evaluate_clients=False
    )
    workflow = FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")
    with LocalRuntime(app, lambda c: views[c], 4, seed=3, **grid_options) as grid:
        return run_workflow(workflow, grid, progress=False)


def assert_survived(result, outcome="rejected"):
    """The run completed every round with the 3 honest members, the model is finite, and
    member 0 was rejected (or failed) in every round; returns member 0's reasons."""
    assert result.summary["rounds_skipped"] == 0
    assert all(np.isfinite(a).all() for a in result.final_arrays.values())
    reasons = []
    for line in result.rounds:
        assert line["replies"] == 3, line
        reasons.append(line[outcome]["0"])
    return reasons


def poisoned(honest, msg, ctx, **changes):
    reply = honest(msg, ctx)
    for key, value in changes.items():
        kind, _, name = key.partition("__")
        getattr(reply, kind)[name or next(iter(reply.arrays))] = value
    return reply


def test_a_masked_array_cannot_hide_nan(tiny_federation):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        name = next(iter(reply.arrays))
        hidden = reply.arrays[name].copy()
        hidden.flat[0] = np.nan  # the NaN that later poisons the mean ...
        reply.arrays[name] = np.ma.masked_invalid(hidden)  # ... masked from the check
        assert np.isfinite(reply.arrays[name]).all()  # what fooled the old check
        return reply

    reasons = assert_survived(run_with(attack, views, x, y))
    assert all("MaskedArray, not a numpy array" in r for r in reasons)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (lambda a: a.astype(object), "unsupported dtype object"),
        (lambda a: np.asmatrix(a.reshape(a.shape[0], -1)), "matrix, not a numpy array"),
        (lambda a: a.astype(np.complex64), "unsupported dtype complex64"),
        (lambda a: a.view(type("Sneaky", (np.ndarray,), {})), "Sneaky, not a numpy array"),
    ],
)
def test_object_arrays_and_subclasses_are_refused(tiny_federation, value, reason):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        name = next(iter(reply.arrays))
        reply.arrays[name] = value(reply.arrays[name])
        return reply

    reasons = assert_survived(run_with(attack, views, x, y))
    assert all(reason in r for r in reasons)


def test_an_inflated_sample_count_is_capped_at_the_members_data(tiny_federation):
    x, y, views = tiny_federation
    held = len(views[0].train_indices) + len(views[0].test_indices)

    def attack(honest, msg, ctx):
        return poisoned(honest, msg, ctx, metrics__num_examples=1e15)

    result = run_with(attack, views, x, y)
    assert result.summary["rounds_skipped"] == 0
    assert all(np.isfinite(a).all() for a in result.final_arrays.values())
    for line in result.rounds:
        assert line["replies"] == 4
        assert line["capped"]["0"] == f"num_examples 1e+15 capped at the member's {held} samples"
    # its weight was its real data size: the same model as an honest member 0 that said so
    honest_run = run_with(
        lambda h, m, c: poisoned(h, m, c, metrics__num_examples=float(held)), views, x, y
    )
    for name, value in honest_run.final_arrays.items():
        assert np.array_equal(value, result.final_arrays[name]), name


@pytest.mark.parametrize("known", [True, False])
def test_an_impossible_sample_count_is_rejected(tiny_federation, known):
    """1e308 made the model Inf; no count above 2**53 is a count, known data size or not."""
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        return poisoned(honest, msg, ctx, metrics__num_examples=1e308)

    options = {} if known else {"data_size": lambda cid: None}
    reasons = assert_survived(run_with(attack, views, x, y, **options))
    assert all("'num_examples' = 1e+308 is not a sample count" in r for r in reasons)


@pytest.mark.parametrize("count", [-1.0, float("nan"), float("inf"), True, "12", 1 + 2j])
def test_negative_or_non_numeric_counts_are_rejected(tiny_federation, count):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        reply.metrics["num_examples"] = count
        return reply

    reasons = assert_survived(run_with(attack, views, x, y))
    assert all("num_examples" in r for r in reasons)


@pytest.mark.parametrize(
    ("key", "reason"),
    [("intruder", "unexpected arrays ['intruder']"), (7, "array name 7 is a int")],
)
def test_unexpected_array_keys_are_rejected(tiny_federation, key, reason):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        reply.arrays[key] = np.zeros(3, np.float32)
        return reply

    reasons = assert_survived(run_with(attack, views, x, y))
    assert all(reason in r for r in reasons)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "exc", [SystemExit(0), KeyboardInterrupt(), GeneratorExit(), MemoryError()]
)
def test_member_code_raising_base_exceptions_fails_only_that_member(tiny_federation, exc, workers):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        raise exc

    result = run_with(attack, views, x, y, workers=workers)
    reasons = assert_survived(result, outcome="failures")
    assert all(r.startswith(type(exc).__name__) for r in reasons)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"payload": [1, 2]}, "config 'payload' is a list, not a scalar"),
        ({"payload": np.zeros(3)}, "config 'payload' is a ndarray"),
        ({"payload": float("nan")}, "config 'payload' is not finite"),
        ({3: 1}, "config name 3 is a int"),
    ],
)
def test_reply_config_is_checked(tiny_federation, config, reason):
    x, y, views = tiny_federation

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        reply.config.update(config)
        return reply

    reasons = assert_survived(run_with(attack, views, x, y))
    assert all(reason in r for r in reasons)


def test_config_bytes_count_against_the_reply_size_limit(tiny_federation):
    x, y, views = tiny_federation
    big = "x" * 10_000_000

    def attack(honest, msg, ctx):
        reply = honest(msg, ctx)
        reply.config["note"] = big
        return reply

    limit = 1_000_000  # far above an honest reply of this model
    result = run_with(attack, views, x, y, max_reply_bytes=limit)
    reasons = assert_survived(result)
    assert all(f"exceeds the limit of {limit}" in r for r in reasons)
    assert Message("k", config={"s": big}).nbytes > len(big)
    assert Message("k", config={"s": "é"}).nbytes == Message("k", config={"s": "ab"}).nbytes


def test_a_reply_that_is_a_message_subclass_cannot_lie_about_its_size():
    class Small(Message):
        @property
        def nbytes(self):
            return 0

    with pytest.raises(InvalidReply, match="Small, not a Message"):
        check_message(Small("train", {"w": np.zeros(10**6)}), "train", max_bytes=100)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_member_writing_into_its_request_changes_nothing_for_the_others(tiny_federation, workers):
    x, y, views = tiny_federation

    def vandal(honest, msg, ctx):
        reply = honest(msg, ctx)  # an honest reply, then it wrecks what it was sent
        for array in msg.arrays.values():
            array[...] = np.nan
        msg.arrays.clear()
        msg.config["lr"] = 1e9
        return reply

    wrecked = run_with(vandal, views, x, y, rounds=3, workers=workers)
    clean = run_with(lambda honest, msg, ctx: honest(msg, ctx), views, x, y, rounds=3)
    assert [r["replies"] for r in wrecked.rounds] == [4, 4, 4]
    for name, value in clean.final_arrays.items():
        assert np.array_equal(value, wrecked.final_arrays[name]), name


@pytest.mark.parametrize("workers", [1, 2])
def test_a_member_over_its_time_is_cut_off_and_the_round_goes_on(tiny_federation, workers):
    x, y, views = tiny_federation

    def stall(honest, msg, ctx):
        with contextlib.suppress(Exception):  # a member that tries to swallow the timeout
            time.sleep(25)
        return honest(msg, ctx)

    start = time.monotonic()
    result = run_with(stall, views, x, y, member_timeout=0.5, workers=workers)
    assert time.monotonic() - start < 10  # two rounds, not 50 s
    reasons = assert_survived(result, outcome="failures")
    assert reasons == ["no reply within member_timeout=0.5 s"] * ROUNDS


def test_outside_the_main_thread_a_late_reply_is_discarded():
    app = ClientApp()

    @app.on("slow")
    def slow(msg, ctx):
        time.sleep(0.4 if ctx.client_id == 0 else 0.0)
        return msg.reply(metrics={"ok": 1.0})

    grid = LocalRuntime(app, lambda c: None, 2, member_timeout=0.2)
    grid.start_round(1)
    box = {}
    worker = threading.Thread(
        target=lambda: box.update(
            grid.send({0: Message("slow"), 1: Message("slow")}, ReplySpec({}))
        )
    )
    worker.start()
    worker.join(10)
    assert sorted(box) == [1]
    assert grid.record.failures == {0: "no reply within member_timeout=0.2 s"}


def test_a_real_ctrl_c_still_stops_the_run():
    app = ClientApp()

    @app.on("work")
    def work(msg, ctx):
        time.sleep(5)
        return msg.reply()

    grid = LocalRuntime(app, lambda c: None, 1, member_timeout=30)
    grid.start_round(1)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        grid.send({0: Message("work")})
    assert time.monotonic() - start < 4
    # the runtime put the handlers back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_attack_at_once_over_a_run(tiny_federation, workers):
    """A member that changes its attack every round: the run completes, every round
    aggregates the honest members, and the model stays finite."""
    x, y, views = tiny_federation
    attacks = [
        lambda r: r.arrays.update(
            {k: np.ma.masked_invalid(v * np.nan) for k, v in r.arrays.items()}
        ),
        lambda r: r.metrics.update(num_examples=-1.0),
        lambda r: r.arrays.update(extra=np.zeros(2, np.float32)),
        lambda r: r.config.update(blob="y" * 2_000_000),
        lambda r: r.arrays.update({k: v.astype(object) for k, v in r.arrays.items()}),
    ]

    def attack(honest, msg, ctx):
        if ctx.round == len(attacks) + 1:
            raise SystemExit(1)
        reply = honest(msg, ctx)
        attacks[ctx.round - 1](reply)
        return reply

    result = run_with(
        attack, views, x, y, rounds=len(attacks) + 1, max_reply_bytes=1_000_000, workers=workers
    )
    assert result.summary["rounds_skipped"] == 0
    assert all(np.isfinite(a).all() for a in result.final_arrays.values())
    assert [r["replies"] for r in result.rounds] == [3] * (len(attacks) + 1)
    assert result.summary["replies_rejected"] == len(attacks)
    assert result.summary["client_failures"] == 1
