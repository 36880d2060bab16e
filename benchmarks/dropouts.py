"""What do dropouts cost FedAvg under label skew, and what wins it back?

The demo's setting (``consortium demo``: digits, 10 members, Dirichlet alpha = 0.3, the CNN,
2 local epochs) with members dropping out of each round at ``failure_rate``, for several
seeds (each seed changes the split, the initial model, the sampling and the dropouts). Every
variant is FedAvg with one option changed; the test accuracy of the global model is read
after ``--at`` rounds of one run (round r of a longer run is the model a run of r rounds
ends with: nothing in FedAvg depends on the total). Prints one row per variant and round
count, mean ± standard deviation over the seeds, and writes every number to ``--out``.

    python benchmarks/dropouts.py [--seeds 0 1 2] [--rounds 30] [--at 15 30]
        [--variants plain dropouts momentum ...] [--out dropouts.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from consortium.algorithms.registry import get_method
from consortium.experiment import build_experiment, execute
from consortium.experiment.checks import prepare_experiment

DEMO: dict[str, Any] = {
    "name": "dropouts",
    "methods": ["fedavg"],
    "data": {
        "dataset": "digits",
        "num_clients": 10,
        "partition": "dirichlet",
        "alpha": 0.3,
        "min_size": 20,
    },
    "model": {"name": "cnn"},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
}

#: name -> (federation settings, fedavg settings)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "no dropouts": ({"failure_rate": 0.0}, {}),
    "dropouts 0.3": ({"failure_rate": 0.3}, {}),
    "dropouts 0.3, momentum 0.5": ({"failure_rate": 0.3}, {"server_momentum": 0.5}),
    "dropouts 0.3, momentum 0.9": ({"failure_rate": 0.3}, {"server_momentum": 0.9}),
    "dropouts 0.3, min_replies 6": ({"failure_rate": 0.3, "min_replies": 6}, {}),
    "no dropouts, momentum 0.5": ({"failure_rate": 0.0}, {"server_momentum": 0.5}),
}


def run(seed: int, rounds: int, federation: dict[str, Any], fedavg: dict[str, Any]) -> dict:
    """One FedAvg run; the server's test accuracy after every round."""
    raw = {**DEMO, "seed": seed, "federation": {"rounds": rounds, **federation}}
    if fedavg:
        raw["fedavg"] = fedavg
    exp = build_experiment(raw)
    ready = prepare_experiment(exp)
    workflow, app = get_method("fedavg").build(ready.context, exp.method_options["fedavg"])
    t0 = time.process_time()
    result = execute(exp, "fedavg", workflow, app, ready.data, None, progress=False)
    curve: dict[str, float | None] = {}
    last = None
    for r in result.rounds:
        if r["round"] >= 1:  # a skipped round left the model, and its accuracy, as it was
            last = r.get("test_accuracy", last)
            curve[str(r["round"])] = last
    return {
        "curve": curve,
        "skipped": result.summary["rounds_skipped"],
        "cpu_s": time.process_time() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--at", type=int, nargs="+", default=[15, 30])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("dropouts.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("consortium").setLevel(logging.ERROR)  # dropouts are the point here
    done: dict[str, dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.variants:
        federation, fedavg = VARIANTS[name]
        for seed in args.seeds:
            key = f"{name} | seed {seed} | rounds {args.rounds}"
            if key in done:  # the file doubles as a resume point: long sweeps get interrupted
                continue
            done[key] = run(seed, args.rounds, federation, fedavg)
            args.out.write_text(json.dumps(done, indent=1))
            acc = done[key]["curve"][str(args.rounds)]
            print(f"{key}: {acc:.4f} ({done[key]['cpu_s']:.0f} CPU s)", flush=True)
    print(f"\n| variant | {' | '.join(f'{r} rounds' for r in args.at)} | rounds skipped |")
    print("|---|" + "---|" * (len(args.at) + 1))
    for name in args.variants:
        runs = [done[f"{name} | seed {s} | rounds {args.rounds}"] for s in args.seeds]
        cells = []
        for r in args.at:
            accs = [100 * x["curve"][str(r)] for x in runs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.1f} ± {sd:.1f}")
        skipped = statistics.mean(x["skipped"] for x in runs)
        print(f"| {name} | {' | '.join(cells)} | {skipped:.1f} |")


if __name__ == "__main__":
    main()
