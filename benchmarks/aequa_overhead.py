"""What does Aequa's slimmable training cost? Aequa's round against FedAvg's, at equal accuracy.

FedAvg and Aequa train the same slimmable model (FedAvg at full width only) from the same
weights on the same members' data with the same batches, side by side in one process: round r
of one, then round r of the other, the order alternating, so drift in the machine's load hits
both alike. Each round is the workflow's ``run_round`` (messages, local training, checks of the
replies, aggregation) without evaluation; wall and CPU time (``time.process_time``) are taken
per round, and the median ratio over the rounds after the first is printed (the paper reports
1.309x; our target is <= 1.25x). After the last round both full-width models are scored on
the test set: a cheaper round only counts at equal accuracy (target: within 1 point). Aequa's
narrowest reward, width ``p_min``, is scored too.

Aequa runs with its defaults unless options are given (``--algorithm1``: the reconstructed
Algorithm 1, narrower widths on every batch). ``--matrix`` runs the four settings of
docs/methods/aequa.md (Fashion-MNIST and digits, slim CNN and slim ResNet-18) one after the
other and prints one table.

    python benchmarks/aequa_overhead.py [--dataset fashion_mnist] [--model slim_cnn]
        [--rounds 30] [--samples 6000] [--narrow-every K] [--sub-batch S] [--algorithm1]
        [--eval-every K]   # the accuracy curves too, to tell a trend from one round's noise
    python benchmarks/aequa_overhead.py --matrix [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from consortium.algorithms.aequa import Aequa, AequaConfig, WidthEvaluator, aequa_client_app
from consortium.algorithms.base.supervised import initial_arrays
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.data import DatasetNotFoundError, build_federated_data
from consortium.models import build_model
from consortium.models import slimmable as _slimmable  # noqa: F401  (registers slim_cnn)
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

NEVER = 10**6
#: The settings of ``--matrix``: (dataset, model, model options, training samples, rounds,
#: batch size, learning rate). The ResNet-18 keeps its depth (four stages of two blocks) at a
#: quarter of the standard channels so its rounds fit a CPU; --model-options changes that. The
#: ResNets run until FedAvg's accuracy has nearly levelled off (digits 60 rounds, Fashion-MNIST
#: 120): after 20, FedAvg's digits ResNet is still at 0.69 test accuracy (digits CNN: 0.94), and
#: comparing two models that far from trained measures how fast each starts, not what it
#: reaches (docs/methods/aequa.md, "Round time"). The learning rate is the one FedAvg does best
#: with: 0.05 everywhere except the Fashion-MNIST ResNet, where FedAvg at 0.05 swings by several
#: points from round to round and ends lower than at 0.02.
MATRIX: list[tuple[str, str, dict[str, Any], int, int, int, float]] = [
    ("fashion_mnist", "slim_cnn", {}, 6000, 30, 64, 0.05),
    ("digits", "slim_cnn", {}, 0, 30, 16, 0.05),
    ("fashion_mnist", "slim_resnet18", {"channels": [16, 32, 64, 128]}, 2000, 120, 64, 0.02),
    ("digits", "slim_resnet18", {"channels": [16, 32, 64, 128]}, 0, 60, 16, 0.05),
]


@dataclass
class Outcome:
    """One setting's result: timing ratios (medians over rounds) and final accuracies."""

    label: str
    wall_fedavg: float
    wall_aequa: float
    wall_ratio: float
    cpu_ratio: float
    cpu_ratio_range: tuple[float, float]
    acc_fedavg: float
    acc_aequa: float
    acc_aequa_pmin: float
    p_min: float
    #: ``(round, FedAvg accuracy, Aequa accuracy)`` every ``--eval-every`` rounds (untimed).
    curve: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def points(self) -> float:
        return 100 * (self.acc_aequa - self.acc_fedavg)


def build_data(dataset: str, clients: int, samples: int, seed: int) -> Any:
    kw: dict[str, Any] = {"num_clients": clients, "scheme": "iid", "server_val_fraction": 0.1}
    if samples > 0:
        kw["max_samples"] = samples
    try:
        return build_federated_data(dataset, seed=seed, **kw)
    except DatasetNotFoundError as err:
        print(f"{err}\nfalling back to digits")
        kw.pop("max_samples", None)
        return build_federated_data("digits", seed=seed, **kw)


def compare(
    dataset: str,
    model: str,
    model_options: dict[str, Any],
    samples: int,
    rounds: int,
    local: LocalTrainConfig,
    aequa_options: dict[str, Any],
    clients: int = 10,
    seed: int = 0,
    eval_every: int = 0,
) -> Outcome:
    """Train FedAvg and Aequa side by side for ``rounds`` rounds; time and score both."""
    data = build_data(dataset, clients, samples, seed)

    def model_fn() -> torch.nn.Module:
        return build_model(model, data.input_shape, data.num_classes, **model_options)

    aequa_cfg = AequaConfig(
        rounds=NEVER,
        local=local,
        contribution="data_size",
        measure_standalone=False,
        evaluate_clients=False,
        eval_every=NEVER,
        **aequa_options,
    )
    fedavg_cfg = FedAvgConfig(rounds=NEVER, local=local, eval_every=NEVER, evaluate_clients=False)
    no_x, no_y = data.test_x[:0], data.test_y[:0]
    app = aequa_client_app(model_fn, "cpu")  # has FedAvg's "train" and Aequa's "aequa_train"
    init = initial_arrays(model_fn, seed)
    sides: dict[str, Any] = {
        "fedavg": FedAvg(fedavg_cfg, model_fn, no_x, no_y, device="cpu"),
        "aequa": Aequa(aequa_cfg, model_fn, data.val_x, data.val_y, no_x, no_y, device="cpu"),
    }
    grids = {n: LocalRuntime(app, data.client, data.num_clients, seed=seed) for n in sides}
    for wf in sides.values():
        wf.weights = dict(init)
    score = WidthEvaluator(model_fn, data.test_x, data.test_y, "cpu")
    curve: list[tuple[int, float, float]] = []
    wall: dict[str, list[float]] = {n: [] for n in sides}
    cpu: dict[str, list[float]] = {n: [] for n in sides}
    for rnd in range(1, rounds + 1):
        order = list(sides) if rnd % 2 else list(reversed(sides))
        for name in order:
            grids[name].start_round(rnd)
            w0, c0 = time.perf_counter(), time.process_time()
            sides[name].run_round(grids[name], rnd)
            if rnd > 1:  # the first round warms caches and allocators
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        if eval_every and (rnd % eval_every == 0 or rnd == rounds):
            accs = (score(sides["fedavg"].weights), score(sides["aequa"].weights))
            curve.append((rnd, *accs))
            print(
                f"  round {rnd}: full-width test accuracy fedavg {accs[0]:.4f}, aequa {accs[1]:.4f}"
            )
    ratios = [a / f for a, f in zip(wall["aequa"], wall["fedavg"], strict=True)]
    cpu_ratios = [a / f for a, f in zip(cpu["aequa"], cpu["fedavg"], strict=True)]
    q1, _, q3 = statistics.quantiles(cpu_ratios, n=4) if len(cpu_ratios) > 1 else [0, 0, 0]
    return Outcome(
        label=f"{data.name} / {model}",
        wall_fedavg=statistics.median(wall["fedavg"]),
        wall_aequa=statistics.median(wall["aequa"]),
        wall_ratio=statistics.median(ratios),
        cpu_ratio=statistics.median(cpu_ratios),
        cpu_ratio_range=(q1, q3),
        acc_fedavg=score(sides["fedavg"].weights),
        acc_aequa=score(sides["aequa"].weights),
        acc_aequa_pmin=score(sides["aequa"].weights, aequa_cfg.p_min),
        p_min=aequa_cfg.p_min,
        curve=curve,
    )


def report(out: Outcome) -> None:
    print(f"fedavg round   median {out.wall_fedavg:.3f} s (wall)")
    print(f"aequa round    median {out.wall_aequa:.3f} s (wall)")
    print(
        f"ratio aequa/fedavg: median {out.wall_ratio:.3f} (wall), {out.cpu_ratio:.3f} (CPU time; "
        f"quartiles {out.cpu_ratio_range[0]:.3f}-{out.cpu_ratio_range[1]:.3f}); paper 1.309, "
        "target <= 1.25"
    )
    print(
        f"full-width test accuracy: fedavg {out.acc_fedavg:.4f}, aequa {out.acc_aequa:.4f} "
        f"(difference {out.points:+.2f} points; target within 1); aequa at p_min={out.p_min:g}: "
        f"{out.acc_aequa_pmin:.4f}"
    )
    if len(out.curve) > 1:
        tail = out.curve[-5:]
        diff = statistics.fmean(100 * (a - f) for _, f, a in tail)
        print(
            f"last {len(tail)} scores (rounds {tail[0][0]}-{tail[-1][0]}): difference "
            f"{diff:+.2f} points on average"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--model", default="slim_cnn")
    p.add_argument("--model-options", default="{}", help="JSON, e.g. '{\"channels\": [8, 16]}'")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--samples", type=int, default=6000, help="pool size (0: the whole dataset)")
    p.add_argument("--rounds", type=int, default=30, help="rounds both train (and are timed)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--lr", type=float, help="learning rate (default 0.05; under --matrix each row's own)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        help="comma-separated seeds, e.g. 0,1,2 (overrides --seed; the table shows "
        "mean ± std over them)",
    )
    p.add_argument("--p-min", type=float)
    p.add_argument("--width-rule", choices=["random", "sandwich"])
    p.add_argument("--num-random", type=int)
    p.add_argument("--narrow-every", type=int)
    p.add_argument("--sub-batch", type=float)
    p.add_argument("--algorithm1", action="store_true", help="Algorithm 1 as reconstructed")
    p.add_argument("--distill", action="store_true", help="in-place distillation of sub-widths")
    p.add_argument("--matrix", action="store_true", help="the four settings of the docs")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also score both full-width models every K rounds (untimed) and print the curve "
        "and the mean difference over the last 5 scores (0: only after the last round)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    aequa_options: dict[str, Any] = {
        key: value
        for key, value in (
            ("p_min", args.p_min),
            ("width_rule", args.width_rule),
            ("num_random", args.num_random),
            ("narrow_every", args.narrow_every),
            ("sub_batch", args.sub_batch),
        )
        if value is not None
    }
    if args.algorithm1:
        aequa_options["training"] = "algorithm1"
    if args.distill:
        aequa_options["distill"] = True
    effective = AequaConfig(**aequa_options)
    lr_text = args.lr or ("per setting" if args.matrix else 0.05)
    print(
        f"aequa: training={effective.training} narrow_every={effective.narrow_every} "
        f"sub_batch={effective.sub_batch} p_min={effective.p_min} rule={effective.width_rule} "
        f"num_random={effective.num_random} distill={effective.distill}; {args.clients} members, "
        f"epochs={args.epochs}, "
        f"lr={lr_text}, torch threads={torch.get_num_threads()}, seed={args.seed}"
    )
    settings = (
        MATRIX
        if args.matrix
        else [
            (
                args.dataset,
                args.model,
                json.loads(args.model_options),
                args.samples,
                args.rounds,
                args.batch_size,
                args.lr or 0.05,
            )
        ]
    )
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    rows: list[list[Outcome]] = []
    for dataset, model, options, samples, rounds, batch, lr in settings:
        lr = args.lr or lr
        local = LocalTrainConfig(epochs=args.epochs, batch_size=batch, lr=lr)
        runs = []
        for seed in seeds:
            print(
                f"\n{dataset} / {model} {options or ''}: {rounds} rounds, batch {batch}, "
                f"lr {lr:g}, seed {seed}"
            )
            out = compare(
                dataset,
                model,
                options,
                samples,
                rounds,
                local,
                aequa_options,
                args.clients,
                seed,
                args.eval_every,
            )
            report(out)
            runs.append(out)
        rows.append(runs)
    if len(rows) > 1 or len(seeds) > 1:
        print(f"\nseeds {','.join(map(str, seeds))}: mean ± std over them")
        print(
            "\n| setting | round ratio (CPU) | round ratio (wall) | full-width acc FedAvg "
            "| full-width acc Aequa | difference (points) | Aequa at p_min |"
        )
        print("|---|---|---|---|---|---|---|")
        for runs in rows:
            print(
                f"| {runs[0].label} | {_ms([r.cpu_ratio for r in runs], 3)} "
                f"| {_ms([r.wall_ratio for r in runs], 3)} "
                f"| {_ms([r.acc_fedavg for r in runs], 4)} "
                f"| {_ms([r.acc_aequa for r in runs], 4)} "
                f"| {_ms([r.points for r in runs], 2, sign=True)} "
                f"| {_ms([r.acc_aequa_pmin for r in runs], 4)} |"
            )


def _ms(values: list[float], digits: int, sign: bool = False) -> str:
    """``mean ± std`` (population std; just the value for one seed)."""
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    mean = fmt.format(statistics.fmean(values))
    if len(values) == 1:
        return mean
    return f"{mean} ± {statistics.pstdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
