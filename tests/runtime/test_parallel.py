"""Members on worker processes: the same run bit for bit, and every way a worker can fail."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.config import ConfigError
from consortium.core import ClientApp, Message, ReplySpec, run_workflow
from consortium.experiment import experiment_from_dict, run_experiment
from consortium.experiment.execution import member_workers
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.runtime.pool import usable_cores
from consortium.training import LocalTrainConfig

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers fork (Linux)")

# -- bit-identical runs -------------------------------------------------------------------

DIGITS = {"dataset": "digits", "num_clients": 4, "max_samples": 600, "min_size": 20}

FEDAVG = {
    "methods": ["fedavg", "scaffold"],
    "data": {**DIGITS, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "cnn"},
    "train": {"epochs": 1, "batch_size": 16},
    # sampling and simulated dropouts: the draws must not depend on the workers either
    "federation": {"rounds": 3, "clients_per_round": 0.75, "failure_rate": 0.2},
}

AEQUA = {
    "methods": ["aequa", "aequa_training_time"],
    "data": {**DIGITS, "partition": "quantity", "beta": 0.5, "server_val_fraction": 0.2},
    "model": {"name": "slim_cnn", "options": {"channels": [8, 16], "hidden": 32}},
    "train": {"epochs": 1, "batch_size": 16},
    "federation": {"rounds": 2},
    "aequa": {"contribution": "standalone"},
    "aequa_training_time": {"contribution": "data_size"},
}

DMTRL = {
    "methods": ["dmtrl"],
    "data": {
        "dataset": "mtl_synthetic",
        "options": {"clusters": [2, 2], "dim": 5, "train_min": 10, "train_max": 20},
    },
    "federation": {"rounds": 30},
    "dmtrl": {"lambda_grid": [0.1]},
}

UNLEARN = {
    "methods": ["fedavg"],
    "data": {**DIGITS, "partition": "iid"},
    "model": {"name": "cnn"},
    "federation": {"rounds": 2},
    "unlearn": {
        "kind": "class",
        "class_id": 2,
        "methods": ["selective", "finetune"],
        "shadow_attack": False,
    },
}


def spam_corpus(root: Path) -> Path:
    for group in ("easy-ham-1", "spam-1", "easy-ham-2", "spam-2"):
        folder = root / "package" / "data" / group
        folder.mkdir(parents=True)
        for i in range(10):
            word = "offer cash now" if group.startswith("spam") else "meeting notes attached"
            text = f"Subject: x\n\n{word} {i} " * 3
            (folder / f"{i:05d}.json").write_text(json.dumps({"group": group, "text": text}))
    return root


def fedra(tmp_path: Path) -> dict:
    pytest.importorskip("peft")
    return {
        "methods": ["fedra"],
        "data": {
            "dataset": "spam_assassin",
            "path": str(spam_corpus(tmp_path / "spam")),
            "num_clients": 4,
            "partition": "groups",
            "min_size": 1,
            "options": {"max_tokens": 16, "tokenizer": "bytes"},
        },
        "train": {"lr": 0.05, "batch_size": 8},
        "federation": {"rounds": 2},
        "fedra": {"capacities": [3, 2, 1, 1], "backbone": "tiny", "lora_r": 2, "lora_alpha": 4},
    }


def run(raw: dict, out: Path, workers: int, start_workers_after: float = 0.0) -> Path:
    raw = json.loads(json.dumps(raw))
    raw.setdefault("federation", {})["workers"] = workers
    raw["federation"]["start_workers_after"] = start_workers_after
    exp = experiment_from_dict({"name": "parallel", "seed": 5, "device": "cpu", **raw})
    run_experiment(exp, out, progress=False, console=Console(file=io.StringIO()))
    return out


def timing(key: str) -> bool:
    return key.endswith(("time_s", "cpu_s")) or key in ("workers", "workers_started_round")


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not timing(k)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def assert_same_run(a: Path, b: Path) -> int:
    """Every model file equal bit for bit, every metric line and summary equal but for time."""
    models = sorted(p.relative_to(a) for p in a.rglob("model.npz"))
    assert models == sorted(p.relative_to(b) for p in b.rglob("model.npz"))
    for rel in models:
        with np.load(a / rel) as x, np.load(b / rel) as y:
            assert x.files == y.files
            for name in x.files:
                assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name]), (
                    rel,
                    name,
                )
    for rel in [p.relative_to(a) for p in a.rglob("metrics.jsonl")]:
        lines = [[json.loads(s) for s in (d / rel).read_text().splitlines()] for d in (a, b)]
        assert without_timing(lines[0]) == without_timing(lines[1]), rel
    for rel in [p.relative_to(a) for p in a.rglob("summary.json")]:
        pair = [json.loads((d / rel).read_text()) for d in (a, b)]
        assert without_timing(pair[0]) == without_timing(pair[1]), rel
    return len(models)


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting", ["fedavg-scaffold", "late-start", "aequa", "dmtrl", "fedra", "unlearning"]
)  # fmt: skip
def test_two_workers_give_the_serial_run_bit_for_bit(tmp_path, setting):
    raw = {
        "fedavg-scaffold": FEDAVG,
        "late-start": FEDAVG,
        "aequa": AEQUA,
        "dmtrl": DMTRL,
        "unlearning": UNLEARN,
    }.get(setting) or fedra(tmp_path)
    # late-start: the first members are served in the run's process, the rest by workers
    late = 0.05 if setting == "late-start" else 0.0
    serial = run(raw, tmp_path / "serial", workers=1)
    parallel = run(raw, tmp_path / "parallel", workers=2, start_workers_after=late)
    assert assert_same_run(serial, parallel) >= 1
    summaries = [json.loads((parallel / m / "summary.json").read_text()) for m in raw["methods"]]
    assert summaries and all(s["workers"] == 2 and s["torch_threads"] == 1 for s in summaries)
    # the workers served members in every run (from its first exchange unless late)
    assert all(s["workers_started_round"] is not None for s in summaries)
    if setting == "fedavg-scaffold":
        lines = (serial / "fedavg" / "metrics.jsonl").read_text().splitlines()
        assert sum(len(json.loads(s)["failures"]) for s in lines) > 0  # dropouts were drawn
    if setting == "unlearning":
        assert (parallel / "unlearn-class2" / "selective" / "model.npz").exists()


# -- failures -------------------------------------------------------------------------------


def model_fn():
    return build_model("mlp", (1, 4, 4), 2, hidden=[8])


def fedavg_run(views, x, y, train, rounds=2, **grid_options):
    app = supervised_client_app(model_fn, "cpu")
    honest = app._handlers["train"]
    app._handlers["train"] = lambda msg, ctx: train(honest, msg, ctx)
    cfg = FedAvgConfig(
        rounds=rounds, local=LocalTrainConfig(lr=0.1, batch_size=8), evaluate_clients=False
    )
    workflow = FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")
    with LocalRuntime(app, lambda c: views[c], 4, seed=3, workers=2, **grid_options) as grid:
        return run_workflow(workflow, grid, progress=False)


def test_a_member_that_kills_its_worker_fails_and_its_worker_is_replaced(tiny_federation):
    x, y, views = tiny_federation

    def train(honest, msg, ctx):
        if ctx.client_id == 1 and ctx.round == 1:
            os._exit(3)
        if ctx.client_id == 2 and ctx.round == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return honest(msg, ctx)

    result = fedavg_run(views, x, y, train, rounds=3)
    assert [r["replies"] for r in result.rounds] == [3, 3, 4]
    assert result.rounds[0]["failures"] == {"1": "member process died (exit code 3)"}
    assert result.rounds[1]["failures"] == {"2": "member process died (killed by SIGKILL)"}
    assert all(np.isfinite(a).all() for a in result.final_arrays.values())


def test_a_member_deaf_to_its_timer_is_stopped_from_outside(tiny_federation):
    x, y, views = tiny_federation

    def train(honest, msg, ctx):
        if ctx.client_id == 0:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # the timer cannot fire
            time.sleep(60)
        return honest(msg, ctx)

    start = time.monotonic()
    result = fedavg_run(views, x, y, train, member_timeout=0.5)
    assert time.monotonic() - start < 30  # two rounds of 0.5 s + grace, not 120 s
    for line in result.rounds:
        assert line["failures"] == {"0": "no reply within member_timeout=0.5 s"}
        assert line["replies"] == 3


def test_a_reply_that_cannot_travel_is_a_failure(tiny_federation):
    x, y, views = tiny_federation

    def train(honest, msg, ctx):
        reply = honest(msg, ctx)
        if ctx.client_id == 0:
            reply.config["f"] = lambda: None  # no wire format carries a function
        return reply

    result = fedavg_run(views, x, y, train)
    for line in result.rounds:
        assert line["failures"]["0"].startswith("reply cannot be sent: ")
        assert line["replies"] == 3


class Smuggler:
    """Pickles as a call of ``os.system``: what a worker must never make the server run."""

    def __reduce__(self):
        return (os.system, ("touch /nonexistent/smuggled",))


def test_a_reply_cannot_make_the_server_run_code(tiny_federation):
    x, y, views = tiny_federation

    def train(honest, msg, ctx):
        reply = honest(msg, ctx)
        if ctx.client_id == 0:
            reply.arrays["w"] = Smuggler()
        return reply

    result = fedavg_run(views, x, y, train)
    for line in result.rounds:
        assert "posix.system may not travel in a reply" in line["failures"]["0"]


def counting_app():
    app = ClientApp()

    @app.on("tick")
    def tick(msg, ctx):
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        if ctx.client_id == 2:
            raise RuntimeError("fails after counting")
        return msg.reply(metrics={"count": ctx.state["count"], "pid": os.getpid()})

    @app.on("work")
    def work(msg, ctx):
        time.sleep(30)
        return msg.reply()

    return app


def test_member_state_travels_with_each_request_whichever_worker_serves_it():
    with LocalRuntime(counting_app(), lambda c: None, 4, workers=2, min_replies=0) as grid:
        pids = set()
        for rnd in range(1, 4):
            grid.start_round(rnd)
            replies = grid.send({c: Message("tick") for c in range(4)}, ReplySpec({}))
            assert [replies[c].metrics["count"] for c in (0, 1, 3)] == [rnd] * 3
            pids |= {r.metrics["pid"] for r in replies.values()}
        assert len(pids) == 2 and os.getpid() not in pids
        # a failing member keeps the state its handler left, as in-process
        assert grid.client_state(2) == {"count": 3}
        assert grid.run_settings() == {
            "workers": 2,
            "torch_threads": 1,
            "workers_started_round": 1,
        }
        assert grid.cpu_time() > 0
    assert grid.worker_pids() == []


def test_a_short_run_is_served_here_and_the_workers_start_once_it_goes_on():
    app = ClientApp()

    @app.on("spin")
    def spin(msg, ctx):
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        return msg.reply(metrics={"pid": os.getpid(), "n": ctx.state["n"]})

    with LocalRuntime(app, lambda c: None, 6, workers=2, start_workers_after=0.1) as grid:
        grid.start_round(1)
        first = grid.send({c: Message("spin") for c in range(3)}, ReplySpec({}))
        # 0.06 CPU-s of member work: no worker was started for it
        assert {r.metrics["pid"] for r in first.values()} == {os.getpid()}
        assert grid.worker_pids() == [] and grid.run_settings()["workers_started_round"] is None
        grid.start_round(2)
        second = grid.send({c: Message("spin") for c in range(6)}, ReplySpec({}))
        here = [c for c, r in second.items() if r.metrics["pid"] == os.getpid()]
        # the threshold is crossed inside the exchange: the members after it go to workers
        assert 1 <= len(here) <= 3 and here == list(range(len(here)))
        assert len(grid.worker_pids()) == 2
        assert [second[c].metrics["n"] for c in range(6)] == [2, 2, 2, 1, 1, 1]
        assert grid.run_settings()["workers_started_round"] == 2
        grid.start_round(3)
        third = grid.send({c: Message("spin") for c in range(6)}, ReplySpec({}))
        assert os.getpid() not in {r.metrics["pid"] for r in third.values()}
        assert [third[c].metrics["n"] for c in range(6)] == [3, 3, 3, 2, 2, 2]
    with pytest.raises(ValueError, match="start_workers_after"):
        LocalRuntime(app, lambda c: None, 2, workers=2, start_workers_after=-1)


def test_members_go_to_whichever_worker_is_free():
    app = ClientApp()

    @app.on("work")
    def work(msg, ctx):
        time.sleep(1.5 if ctx.client_id == 0 else 0.01)
        return msg.reply(metrics={"pid": os.getpid()})

    with LocalRuntime(app, lambda c: None, 8, workers=2) as grid:
        grid.start_round(1)
        replies = grid.send({c: Message("work") for c in range(8)}, ReplySpec({}))
    slow = replies[0].metrics["pid"]
    served_by_slow = [c for c, r in replies.items() if r.metrics["pid"] == slow]
    # the worker stuck on member 0 held one request behind it at most; the other did the rest
    assert len(served_by_slow) <= 2 and len(replies) == 8


def test_the_largest_members_go_out_first_one_to_each_worker(monkeypatch):
    from types import SimpleNamespace

    from consortium.runtime.pool import WorkerPool

    sizes = [3, 40, 5, 30, 1, 20]
    views = [SimpleNamespace(train_indices=np.arange(n), test_indices=np.arange(0)) for n in sizes]
    handed: list[list[int]] = []
    original = WorkerPool.run

    def recording(self, tasks, progress=None):
        handed.append([t.cid for t in tasks])
        return original(self, tasks, progress)

    monkeypatch.setattr(WorkerPool, "run", recording)
    app = ClientApp()

    @app.on("work")
    def work(msg, ctx):
        time.sleep(0.05)
        return msg.reply(metrics={"pid": os.getpid()})

    with LocalRuntime(app, lambda c: views[c], 6, workers=2) as grid:
        grid.start_round(1)
        replies = grid.send({c: Message("work") for c in range(6)}, ReplySpec({}))
    assert handed == [[1, 3, 5, 2, 0, 4]]  # by size, largest first
    # the two largest start at once, on different workers (not one queued behind the other)
    assert replies[1].metrics["pid"] != replies[3].metrics["pid"]


def test_ctrl_c_stops_the_workers():
    grid = LocalRuntime(counting_app(), lambda c: None, 2, workers=2)
    grid.start_round(1)
    grid.send({0: Message("tick"), 1: Message("tick")}, ReplySpec({}))
    pids = grid.worker_pids()
    assert len(pids) == 2
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        grid.send({0: Message("work"), 1: Message("work")})
    assert time.monotonic() - start < 10
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # the runtime can go on: new workers on the next exchange
    replies = grid.send({0: Message("tick")}, ReplySpec({}))
    assert replies[0].metrics["count"] == 2
    grid.close()


def private_mb(pid: int) -> float:
    """Memory only this process holds (its pages not shared with the run's process)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


def test_workers_share_the_data_pool_instead_of_copying_it():
    pool = np.random.default_rng(0).random((25_000, 1024))  # 200 MB the members read
    app = ClientApp()

    @app.on("sum")
    def total(msg, ctx):
        rows = ctx.data
        return msg.reply(metrics={"sum": float(pool[rows].sum())})

    views = [np.arange(c, 25_000, 8) for c in range(8)]
    with LocalRuntime(app, lambda c: views[c], 8, workers=2) as grid:
        grid.start_round(1)
        replies = grid.send({c: Message("sum") for c in range(8)}, ReplySpec({}))
        assert sum(r.metrics["sum"] for r in replies.values()) == pytest.approx(pool.sum())
        for pid in grid.worker_pids():
            # a worker's own pages (torch, a member's 25 MB slice): 55-61 MB here; a copied
            # pool would add its 200 MB
            assert private_mb(pid) < 100, private_mb(pid)


# -- settings -------------------------------------------------------------------------------


def test_worker_and_thread_settings():
    with pytest.raises(ValueError, match="torch_threads > 1 needs workers = 1"):
        LocalRuntime(counting_app(), lambda c: None, 2, workers=2, torch_threads=2)
    base = {"name": "x", "data": {"dataset": "digits", "num_clients": 3}}
    with pytest.raises(ConfigError, match="torch_threads > 1 needs workers = 1"):
        experiment_from_dict({**base, "federation": {"workers": 2, "torch_threads": 2}})
    auto = experiment_from_dict(base)
    assert member_workers(auto, 3) == min(usable_cores(), 3)
    assert member_workers(auto, 1) == 1
    threads = experiment_from_dict({**base, "federation": {"torch_threads": 2}})
    assert member_workers(threads, 3) == 1
    cuda = experiment_from_dict({**base, "device": "cuda", "federation": {"workers": 2}})
    with pytest.raises(ConfigError, match='needs device = "cpu"'):
        member_workers(cuda, 3)
    assert member_workers(experiment_from_dict({**base, "device": "cuda"}), 3) == 1
