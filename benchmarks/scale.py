"""FedAvg with many simulated members: time per round and peak memory.

Each member count runs in a fresh subprocess so its peak resident memory is its own. Memory
should stay flat in the number of idle members: members exist only while they handle a message.

    python benchmarks/scale.py [--configs 100:10 1000:10 1000:100] [--rounds 3]

A config ``N:K`` is N members of which K are sampled per round: ``100:10`` against ``1000:10``
shows memory flat in idle members; ``1000:100`` is 1,000 members with 10 % per round.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(num_clients: int, per_round: int, rounds: int, dataset: str) -> dict:
    import torch

    from consortium.algorithms.base.supervised import supervised_client_app
    from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
    from consortium.core import run_workflow
    from consortium.data import DatasetNotFoundError, build_federated_data
    from consortium.models import build_model
    from consortium.runtime import LocalRuntime
    from consortium.training import LocalTrainConfig

    try:
        data = build_federated_data(
            dataset, num_clients=num_clients, scheme="iid", seed=0, min_size=1
        )
    except DatasetNotFoundError:
        data = build_federated_data(
            "digits", num_clients=min(num_clients, 100), scheme="iid", seed=0, min_size=1
        )
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def model_fn() -> torch.nn.Module:
        return build_model("cnn", data.input_shape, data.num_classes)

    cfg = FedAvgConfig(
        rounds=rounds,
        clients_per_round=min(per_round, data.num_clients),
        local=LocalTrainConfig(epochs=1, batch_size=32),
        eval_every=10**6,
        evaluate_clients=False,
    )
    wf = FedAvg(cfg, model_fn, data.test_x[:1000], data.test_y[:1000], device="cpu")
    grid = LocalRuntime(
        supervised_client_app(model_fn, "cpu"), data.client, data.num_clients, seed=0
    )
    t0 = time.perf_counter()
    result = run_workflow(wf, grid, progress=False)
    elapsed = time.perf_counter() - t0
    per_round = [r["time_s"] for r in result.rounds if r["phase"] == "train"]
    return {
        "dataset": data.name,
        "clients": data.num_clients,
        "sampled_per_round": result.rounds[-1]["clients_sent"],
        "rounds": rounds,
        "time_per_round_s": sum(per_round) / len(per_round),
        "total_s": elapsed,
        "rss_after_data_mb": rss_data,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_accuracy": result.summary.get("test_accuracy"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--configs",
        nargs="+",
        default=["100:10", "1000:10", "1000:100"],
        help="MEMBERS:PER_ROUND pairs",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        n, k = (int(v) for v in args.worker.split(":"))
        print(json.dumps(worker(n, k, args.rounds, args.dataset)))
        return
    for config in args.configs:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    config,
                    "--rounds",
                    str(args.rounds),
                    "--dataset",
                    args.dataset,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        r = json.loads(out)
        print(
            f"{r['dataset']}: {r['clients']} members, {r['sampled_per_round']} per round: "
            f"{r['time_per_round_s']:.2f} s/round, peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(after loading data {r['rss_after_data_mb']:.0f} MB), "
            f"test acc after {r['rounds']} rounds {r['test_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
