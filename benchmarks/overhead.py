"""What does the federation itself cost? One FedAvg round vs centralised training.

Both sides train the same model from the same weights on exactly the same mini-batches (each
sampled member's shuffled local epochs, in member order), in one process. The federated side
adds what FedAvg adds: messages, per-member weight loading and copying, reply validation and
the weighted average. Prints the median ratio over repeats; target <= 1.10.

    python benchmarks/overhead.py [--clients 10] [--epochs 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from consortium.algorithms.base.supervised import initial_arrays, supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.data import DatasetNotFoundError, build_federated_data
from consortium.models import build_model, set_arrays
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, batch_order, train_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--samples", type=int, default=6000, help="training pool size")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--model", default="cnn")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 keeps timings stable on a shared machine)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    try:
        data = build_federated_data(
            args.dataset, num_clients=args.clients, scheme="iid", max_samples=args.samples, seed=0
        )
    except DatasetNotFoundError as err:
        print(f"{err}\nfalling back to digits")
        data = build_federated_data("digits", num_clients=args.clients, scheme="iid", seed=0)

    def model_fn() -> torch.nn.Module:
        return build_model(args.model, data.input_shape, data.num_classes)

    local = LocalTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    cfg = FedAvgConfig(rounds=10**6, local=local, eval_every=10**6, evaluate_clients=False)
    app = supervised_client_app(model_fn, "cpu")
    grid = LocalRuntime(app, data.client, data.num_clients, seed=0)
    init = initial_arrays(model_fn, 0)
    central_model = model_fn()

    def fed_round(rnd: int) -> None:
        wf = FedAvg(cfg, model_fn, data.test_x[:0], data.test_y[:0], device="cpu")
        wf.weights = dict(init)
        grid.start_round(rnd)
        wf.run_round(grid, rnd)

    def central_round(rnd: int) -> None:
        # One model, one optimiser, the very same batches in the same order.
        grid.start_round(rnd)
        batches = []
        for cid in grid.client_ids:
            view = data.client(cid)
            seed = grid.client_seed(cid)
            batches += batch_order(view.train_indices, local.batch_size, seed, local.epochs)
        set_arrays(central_model, init)
        torch.manual_seed(0)
        train_batches(central_model, data.pool_x, data.pool_y, batches, local)

    def timed(fn, rnd: int) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(rnd)
        return time.perf_counter() - w0, time.process_time() - c0

    fed_times, central_times, fed_cpu, central_cpu = [], [], [], []
    for rep in range(args.repeats + 1):
        rnd = rep + 1
        # Alternate which side goes first so drift in machine load hits both alike.
        order = [("fed", fed_round), ("central", central_round)]
        if rep % 2:
            order.reverse()
        results = {name: timed(fn, rnd) for name, fn in order}
        if rep > 0:  # the first repeat warms caches and allocators
            fed_times.append(results["fed"][0])
            central_times.append(results["central"][0])
            fed_cpu.append(results["fed"][1])
            central_cpu.append(results["central"][1])

    ratios = [f / c for f, c in zip(fed_times, central_times, strict=True)]
    cpu_ratios = [f / c for f, c in zip(fed_cpu, central_cpu, strict=True)]
    n_samples = sum(len(data.client(c).train_indices) for c in grid.client_ids)
    print(
        f"data={data.name} clients={args.clients} samples={n_samples} epochs={args.epochs} "
        f"batch={args.batch_size} model={args.model} repeats={args.repeats} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"fedavg round   median {statistics.median(fed_times):.3f} s")
    print(f"centralised    median {statistics.median(central_times):.3f} s")
    print(
        f"ratio fedavg/centralised: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.10"
    )
    print(
        f"ratio of CPU time:        median {statistics.median(cpu_ratios):.3f} "
        f"(min {min(cpu_ratios):.3f}, max {max(cpu_ratios):.3f})"
    )


if __name__ == "__main__":
    main()
