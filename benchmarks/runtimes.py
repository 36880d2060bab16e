"""One FedAvg workload on three runtimes: in-process, Flower simulation, Flower deployment.

Same experiment (data, partition, model, local training, rounds, members, seed) each time;
prints the wall time of the run loop (set-up, rounds and final evaluation, as the run's
summary reports it) and of the whole thing (including starting Ray or the federation and
submitting the app), the ratios to in-process, and the largest weight difference between
the runtimes' final models (the same seed must give the same model).

The deployment is a loopback federation: one SuperLink and one SuperNode per member as
separate processes on 127.0.0.1 (``--tls`` adds TLS and SuperNode authentication). A
SuperNode starts a new process for every message, so each round costs at least the start-up
of one Python process per member with torch imported.

    python benchmarks/runtimes.py [--clients 4] [--rounds 3] [--dataset digits] [--tls]

Needs the Flower extra: ``pip install "consortium[flower]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

OFFLINE = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def experiment(args: argparse.Namespace) -> Any:
    from consortium.experiment import experiment_from_dict

    return experiment_from_dict(
        {
            "name": "bench-runtimes",
            "seed": 0,
            "methods": ["fedavg"],
            "device": "cpu",
            "data": {"dataset": args.dataset, "num_clients": args.clients, "partition": "iid"},
            "model": {"name": args.model},
            "train": {"epochs": args.epochs, "batch_size": 32, "lr": 0.05},
            "federation": {"rounds": args.rounds, "min_replies": args.clients},
            "fedavg": {"evaluate_clients": True},
        }
    )


def build(exp: Any) -> tuple[Any, Any, Any]:
    from consortium.data import build_data
    from consortium.experiment import get_method, method_context

    data = build_data(exp.data, exp.seed)
    ctx = method_context(exp, data)
    workflow, app = get_method("fedavg").build(ctx, exp.method_options["fedavg"])
    return data, workflow, app


def in_process(exp: Any, out: Path) -> dict[str, Any]:
    from consortium.core import run_workflow
    from consortium.runtime import LocalRuntime

    t0 = time.perf_counter()
    data, workflow, app = build(exp)
    grid = LocalRuntime(app, data.client, data.num_clients, seed=exp.seed)
    result = run_workflow(workflow, grid, run_dir=out, progress=False)
    return {"loop": result.wall_time_s, "total": time.perf_counter() - t0, "dir": out}


def simulation(exp: Any, out: Path, cpus: int) -> dict[str, Any]:
    from consortium.experiment.flower import experiment_member_factory
    from consortium.runtime.flower import run_on_flower_simulation, simulation_backend_config

    t0 = time.perf_counter()
    data, workflow, _ = build(exp)
    result = run_on_flower_simulation(
        workflow,
        experiment_member_factory(exp, "fedavg"),
        data.num_clients,
        seed=exp.seed,
        min_replies=exp.federation.min_replies,
        run_dir=out,
        progress=False,
        backend_config=simulation_backend_config(num_cpus=cpus),
    )
    return {"loop": result.wall_time_s, "total": time.perf_counter() - t0, "dir": out}


def deployment(exp: Any, out: Path, work: Path, tls: bool) -> dict[str, Any]:
    from consortium.experiment.flower import write_flower_app
    from consortium.runtime.flower import LoopbackFederation

    t0 = time.perf_counter()
    write_flower_app(exp, work / "app", run_dir=out)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LoopbackFederation(
        exp.data.num_clients, work / "fed", tls=tls, node_auth=tls, env=env
    ) as fed:
        started = time.perf_counter()
        run = fed.run(work / "app", timeout=3600)
        if not run.ok:
            raise RuntimeError(f"the Flower run ended {run.status}:\n{run.log[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "loop": summary["wall_time_s"],
        "total": time.perf_counter() - t0,
        "startup": started - t0,
        "dir": out,
    }


def model(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "model.npz") as npz:
        return {k: npz[k] for k in npz.files}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="cnn")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs Ray may use")
    p.add_argument("--tls", action="store_true", help="deployment with TLS and node auth")
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["simulation", "deployment"], help="runtimes"
    )
    args = p.parse_args()
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    torch.set_num_threads(1)  # as every member process of the Flower runtimes
    exp = experiment(args)

    with tempfile.TemporaryDirectory(prefix="consortium-bench-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("FLWR_HOME", str(work / "flwr-home"))
        results = {"in-process": in_process(exp, work / "local")}
        if "simulation" not in args.skip:
            results["flower simulation"] = simulation(exp, work / "sim", args.cpus)
        if "deployment" not in args.skip:
            results["flower deployment"] = deployment(exp, work / "deploy", work, args.tls)

        reference = model(results["in-process"]["dir"])
        base = results["in-process"]
        for r in results.values():
            r["round"] = steady_round(r["dir"])
        print(
            f"FedAvg: {args.dataset}, {args.clients} members (all sampled), {args.rounds} rounds,"
            f" {args.epochs} local epoch(s), model {args.model}; {os.cpu_count()} CPUs"
            f"{'; deployment with TLS + node auth' if args.tls else ''}"
        )
        print(
            f"{'runtime':<19} {'total s':>8} {'ratio':>6} {'run loop s':>10} {'ratio':>6}"
            f" {'round s':>8} {'ratio':>6} {'max |dw|':>9}"
        )
        for name, r in results.items():
            diff = max(float(np.abs(v - reference[k]).max()) for k, v in model(r["dir"]).items())
            print(
                f"{name:<19} {r['total']:>8.2f} {r['total'] / base['total']:>6.1f}"
                f" {r['loop']:>10.2f} {r['loop'] / base['loop']:>6.1f}"
                f" {r['round']:>8.3f} {r['round'] / base['round']:>6.1f} {diff:>9.1e}"
            )
        print(
            "total: everything from building the data to the result (Ray start-up, federation"
            " start-up, app submission, members joining); run loop: rounds and final evaluation;"
            " round: median of rounds 2.. (steady state)"
        )
        if "flower deployment" in results:
            r = results["flower deployment"]
            print(f"deployment: federation start-up {r['startup']:.1f} s")


def steady_round(run_dir: Path) -> float:
    """Median time of rounds after the first (which pays one-off start-up costs)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    times = [r["time_s"] for r in lines if r["round"] >= 2] or [r["time_s"] for r in lines]
    return float(np.median(times))


if __name__ == "__main__":
    main()
