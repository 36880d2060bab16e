"""What does Aequa's slimmable training cost? One Aequa round vs one FedAvg round.

Both train the same slimmable model (``slim_cnn`` at full width for FedAvg) from the same
weights on the same members' data, with the same batches, in one process; each round is the
workflow's ``run_round`` without the per-round evaluation (messages, local training,
validation of replies, aggregation). The extra cost of Aequa is the narrower network(s)
trained on every batch. Prints the median ratio of round times over repeats (the paper reports
1.309x; our target is <= 1.25x), then (``--rounds > 0``) trains both for that many rounds and
prints the full-width test accuracies, since a cheaper round only counts at equal accuracy
(target: within 1 point).

    python benchmarks/aequa_overhead.py [--clients 10] [--samples 6000] [--repeats 7]
        [--p-min 0.1] [--sub-batch 1.0] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from consortium.algorithms.aequa import Aequa, AequaConfig, aequa_client_app
from consortium.algorithms.base.supervised import initial_arrays
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.core.run import run_workflow
from consortium.data import DatasetNotFoundError, build_federated_data
from consortium.models import build_model
from consortium.models import slimmable as _slimmable  # noqa: F401  (registers slim_cnn)
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

NEVER = 10**6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--samples", type=int, default=6000, help="training pool size")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--model", default="slim_cnn")
    p.add_argument("--p-min", type=float, default=0.1)
    p.add_argument("--width-rule", default="random", choices=["random", "sandwich"])
    p.add_argument("--num-random", type=int, default=1)
    p.add_argument("--sub-batch", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=10, help="accuracy check (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    try:
        data = build_federated_data(
            args.dataset,
            num_clients=args.clients,
            scheme="iid",
            max_samples=args.samples,
            server_val_fraction=0.1,
            seed=0,
        )
    except DatasetNotFoundError as err:
        print(f"{err}\nfalling back to digits")
        data = build_federated_data(
            "digits", num_clients=args.clients, scheme="iid", server_val_fraction=0.1, seed=0
        )

    def model_fn() -> torch.nn.Module:
        return build_model(args.model, data.input_shape, data.num_classes)

    local = LocalTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    aequa_cfg = AequaConfig(
        rounds=NEVER,
        local=local,
        p_min=args.p_min,
        width_rule=args.width_rule,
        num_random=args.num_random,
        sub_batch=args.sub_batch,
        contribution="data_size",
        measure_standalone=False,
        eval_every=NEVER,
    )
    fedavg_cfg = FedAvgConfig(rounds=NEVER, local=local, eval_every=NEVER, evaluate_clients=False)
    empty_x, empty_y = data.test_x[:0], data.test_y[:0]
    app = aequa_client_app(model_fn, "cpu")  # has FedAvg's "train" and Aequa's "aequa_train"
    grid = LocalRuntime(app, data.client, data.num_clients, seed=0)
    init = initial_arrays(model_fn, 0)

    def fedavg_round(rnd: int) -> None:
        wf = FedAvg(fedavg_cfg, model_fn, empty_x, empty_y, device="cpu")
        wf.weights = dict(init)
        grid.start_round(rnd)
        wf.run_round(grid, rnd)

    def aequa_round(rnd: int) -> None:
        wf = Aequa(aequa_cfg, model_fn, data.val_x, data.val_y, empty_x, empty_y, device="cpu")
        wf.weights = dict(init)
        grid.start_round(rnd)
        wf.run_round(grid, rnd)

    def timed(fn, rnd: int) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(rnd)
        return time.perf_counter() - w0, time.process_time() - c0

    wall: dict[str, list[float]] = {"fedavg": [], "aequa": []}
    cpu: dict[str, list[float]] = {"fedavg": [], "aequa": []}
    for rep in range(args.repeats + 1):
        # Alternate which side goes first so drift in machine load hits both alike.
        order = [("fedavg", fedavg_round), ("aequa", aequa_round)]
        if rep % 2:
            order.reverse()
        results = {name: timed(fn, rep + 1) for name, fn in order}
        if rep > 0:  # the first repeat warms caches and allocators
            for name, (w, c) in results.items():
                wall[name].append(w)
                cpu[name].append(c)

    ratios = [a / f for a, f in zip(wall["aequa"], wall["fedavg"], strict=True)]
    cpu_ratios = [a / f for a, f in zip(cpu["aequa"], cpu["fedavg"], strict=True)]
    n_samples = sum(len(data.client(c).train_indices) for c in grid.client_ids)
    print(
        f"data={data.name} clients={args.clients} samples={n_samples} epochs={args.epochs} "
        f"batch={args.batch_size} model={args.model} p_min={args.p_min} "
        f"rule={args.width_rule} num_random={args.num_random} sub_batch={args.sub_batch} "
        f"repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print(f"fedavg round   median {statistics.median(wall['fedavg']):.3f} s")
    print(f"aequa round    median {statistics.median(wall['aequa']):.3f} s")
    print(
        f"ratio aequa/fedavg: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); paper 1.309, target <= 1.25"
    )
    print(f"ratio of CPU time:  median {statistics.median(cpu_ratios):.3f}")

    if args.rounds > 0:
        accs = {}
        for name in ("fedavg", "aequa"):
            if name == "fedavg":
                cfg = FedAvgConfig(
                    rounds=args.rounds, local=local, eval_every=NEVER, evaluate_clients=False
                )
                wf = FedAvg(cfg, model_fn, data.test_x, data.test_y, device="cpu")
            else:
                cfg_a = replace(aequa_cfg, rounds=args.rounds, evaluate_clients=False)
                wf = Aequa(
                    cfg_a,
                    model_fn,
                    data.val_x,
                    data.val_y,
                    data.test_x,
                    data.test_y,
                    device="cpu",
                )
            g = LocalRuntime(app, data.client, data.num_clients, seed=0)
            result = run_workflow(wf, g, progress=False)
            accs[name] = result.summary["test_accuracy"]
        print(
            f"full-width test accuracy after {args.rounds} rounds: fedavg {accs['fedavg']:.4f}, "
            f"aequa {accs['aequa']:.4f} (difference {100 * (accs['aequa'] - accs['fedavg']):+.2f}"
            " points; target within 1)"
        )


if __name__ == "__main__":
    main()
