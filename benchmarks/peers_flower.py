"""The benchmark job of ``benchmarks/peers.py`` written as a stock Flower user writes it.

A ``ServerApp`` running Flower's own ``FedAvg`` strategy with central evaluation, a
``ClientApp`` whose ``train`` handler trains a plain PyTorch CNN with SGD and momentum, and
Flower's Ray simulation engine with one CPU per member (so as many members train at once as
there are cores). No consortium code: the members, their samples and the initial weights
come from the files ``peers.py`` wrote.

    python benchmarks/peers_flower.py SPEC.json

As Flower users do, the apps live in a module the simulation's worker processes import
(this file, by name), so each worker loads the data once and keeps it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from peers_job import Net, load_samples
from torch import nn


@functools.cache
def spec() -> dict[str, Any]:
    """The job's settings (their path travels to the workers in the environment)."""
    return json.loads(Path(os.environ["PEERS_SPEC"]).read_text())


def new_model() -> Net:
    c, h, _ = spec()["input_shape"]
    return Net(c, h, spec()["num_classes"])


@functools.cache
def data() -> dict[str, np.ndarray]:
    """All samples, the members' sample ids and the test set (loaded once per process)."""
    return load_samples(spec())


def member_samples(pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = data()
    ids = d["ids"][d["cut"][pid] : d["cut"][pid + 1]]
    return torch.from_numpy(d["x"][ids]), torch.from_numpy(d["y"][ids])


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), 1024):
        logits = model(torch.from_numpy(x[i : i + 1024]))
        correct += int((logits.argmax(1) == torch.from_numpy(y[i : i + 1024])).sum())
    return correct / len(y)


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    model = new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = member_samples(int(context.node_config["partition-id"]))
    s = spec()
    opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
    model.train()
    total = 0.0
    for _ in range(s["epochs"]):
        order = torch.randperm(len(y))
        for i in range(0, len(y), s["batch_size"]):
            idx = order[i : i + s["batch_size"]]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
    metrics = {"train_loss": total / (s["epochs"] * len(y)), "num-examples": len(y)}
    arrays = ArrayRecord(model.state_dict())
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    model = new_model()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(spec()["init"]).items()})
    d = data()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": accuracy(model, d["test_x"], d["test_y"])})

    members = len(d["cut"]) - 1
    strategy = FedAvg(
        fraction_train=spec()["fraction"],
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=members,
    )
    start = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=spec()["rounds"],
        evaluate_fn=central,
    )
    loop = time.perf_counter() - start
    model.load_state_dict(result.arrays.to_torch_state_dict())
    out = {"loop_s": loop, "test_accuracy": accuracy(model, d["test_x"], d["test_y"])}
    Path(spec()["result"]).write_text(json.dumps(out))


if __name__ == "__main__":
    from flwr.simulation import run_simulation

    os.environ["PEERS_SPEC"] = str(Path(sys.argv[1]).absolute())
    sys.path.insert(0, str(Path(__file__).parent))
    import peers_flower as job  # the apps by module name, as the workers will find them

    cpus = spec().get("cpus") or os.cpu_count()
    run_simulation(
        server_app=job.server,
        client_app=job.app,
        num_supernodes=len(job.data()["cut"]) - 1,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "logging_level": "ERROR", "log_to_driver": False},
        },
    )
