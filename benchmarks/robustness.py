"""What hostile members do to FedAvg, what each aggregation rule keeps, and what DP costs.

FedAvg on Fashion-MNIST (a stratified subsample; the official test split, subsampled), ten
members with IID shares. Members ``0 .. b-1`` are hostile (b = 0..3); they are simulated
members, i.e. a hostile ClientApp handler around the honest one, and nothing in the library
knows about them:

* ``sign_flip``: sends ``w - Δ`` instead of ``w + Δ`` (its honest update, reversed);
* ``scale100``: sends ``w + 100·Δ``;
* ``gaussian``: sends ``w + N(0, σ²)`` (σ = ``--noise-std``, per entry) instead of training;
* ``label_flip``: trains honestly on labels ``9 - y`` (data poisoning).

Every rule of ``[<method>.aggregation]`` is run against every attack: ``mean`` (plain
FedAvg), ``median``, ``trimmed_mean``, ``krum``, ``multi_krum`` and ``clip`` (the mean of
updates clipped to the round's median norm). The server assumes at most ``--assume`` hostile
members: Krum's f and the trimmed share (``assume / members``) come from it. The table holds
the final test accuracy of each cell; the clean run (b = 0) is each rule's reference.

A second table runs DP-FedAvg (``dp_fedavg``) at the target ε of ``--epsilons`` (δ = 1e-5,
every member every round, so no amplification by sampling) against non-private FedAvg on the
same federation, and the same with ``--dp-members`` members sampled at ``--dp-rate`` (the
regime member-level DP is made for).

    python benchmarks/robustness.py                     # the tables in docs/robustness.md
    python benchmarks/robustness.py --quick             # a smoke run in a minute or two
    python benchmarks/robustness.py --out results.json  # also write every cell as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import DPFedAvg, DPFedAvgConfig, FedAvg, FedAvgConfig
from consortium.core import ClientApp, ClientContext, Message, run_workflow
from consortium.data import build_federated_data
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig

ATTACKS = ("sign_flip", "scale100", "gaussian", "label_flip")
RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "clip")


def hostile_app(
    honest: ClientApp, attackers: set[int], attack: str, noise_std: float, num_classes: int
) -> ClientApp:
    """Members in ``attackers`` answer ``train`` with an attack; everyone else, and every other
    message kind, is the honest handler."""
    app = ClientApp()

    @app.on("train")
    def train(msg: Message, ctx: ClientContext) -> Message:
        if ctx.client_id not in attackers:
            return honest.handle(msg, ctx)
        if attack == "label_flip":
            flipped = dataclasses.replace(ctx.data, y=(num_classes - 1 - ctx.data.y))
            return honest.handle(msg, dataclasses.replace(ctx, data=flipped))
        if attack == "gaussian":
            rng = np.random.default_rng(ctx.seed)
            arrays = {
                k: (v + rng.normal(0.0, noise_std, v.shape)).astype(v.dtype)
                for k, v in msg.arrays.items()
            }
            n = float(len(ctx.data.train_indices))
            return msg.reply(arrays=arrays, metrics={"num_examples": n, "train_loss": 0.0})
        reply = honest.handle(msg, ctx)
        factor = -1.0 if attack == "sign_flip" else 100.0
        arrays = {
            k: (w + factor * (reply.arrays[k] - w)).astype(w.dtype) for k, w in msg.arrays.items()
        }
        return msg.reply(arrays=arrays, metrics=reply.metrics)

    @app.on("evaluate")
    def evaluate(msg: Message, ctx: ClientContext) -> Message:
        return honest.handle(msg, ctx)

    return app


def aggregation(rule: str, assume: int, members: int) -> dict[str, Any]:
    """The ``aggregation`` options of a rule for a server that assumes ``assume`` attackers."""
    if rule == "clip":
        return {"rule": "mean", "clip_norm": "median"}
    return {"rule": rule, "byzantine": assume, "trim_fraction": min(0.45, assume / members)}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = build_federated_data(
            "fashion_mnist",
            num_clients=args.members,
            scheme="iid",
            seed=args.seed,
            max_samples=args.train_samples,
        )
        self.test = (self.data.test_x[: args.test_samples], self.data.test_y[: args.test_samples])
        self.local = LocalTrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr)

    def model_fn(self) -> Callable[[], Any]:
        data, hidden = self.data, self.args.hidden

        def build() -> Any:
            return build_model("mlp", data.input_shape, data.num_classes, hidden=(hidden,))

        return build

    def run(self, workflow: Any, app: ClientApp, data: Any | None = None) -> dict[str, Any]:
        data = data or self.data
        grid = LocalRuntime(app, data.client, data.num_clients, seed=self.args.seed)
        t0 = time.process_time()
        result = run_workflow(workflow, grid, progress=False)
        summary = dict(result.summary)
        summary["cpu_s"] = time.process_time() - t0
        return summary

    def attack_cell(self, rule: str, attack: str, hostile: int) -> dict[str, Any]:
        a = self.args
        mf = self.model_fn()
        cfg = FedAvgConfig(
            rounds=a.rounds,
            local=self.local,
            eval_every=a.rounds,
            evaluate_clients=False,
            aggregation=aggregation(rule, a.assume, a.members),
        )
        honest = supervised_client_app(mf, "cpu")
        app = hostile_app(honest, set(range(hostile)), attack, a.noise_std, self.data.num_classes)
        return self.run(FedAvg(cfg, mf, *self.test, "cpu"), app)

    def dp_cell(
        self, epsilon: float | None, members: int, rate: float, clip: float
    ) -> dict[str, Any]:
        a = self.args
        data = self.data
        if members != a.members:
            data = self.large = getattr(self, "large", None) or build_federated_data(
                "fashion_mnist",
                num_clients=members,
                scheme="iid",
                seed=a.seed,
                max_samples=a.dp_train_samples,
                min_size=1,
            )
        mf = self.model_fn()
        common = {
            "rounds": a.dp_rounds,
            "clients_per_round": rate,
            "local": self.local,
            "eval_every": a.dp_rounds,
            "evaluate_clients": False,
        }
        if epsilon is None:
            wf: Any = FedAvg(FedAvgConfig(**common, weighted=False), mf, *self.test, "cpu")
        else:
            cfg = DPFedAvgConfig(
                **common, target_epsilon=epsilon, clip_norm=clip, reproducible=True
            )
            wf = DPFedAvg(cfg, mf, *self.test, "cpu")
        return self.run(wf, supervised_client_app(mf, "cpu"), data)


def attack_table(bench: Bench, out: dict[str, Any]) -> None:
    a = bench.args
    rows: list[tuple[str, int]] = [("none", 0)]
    rows += [(attack, b) for attack in a.attacks for b in a.hostile if b > 0]
    print(f"\nfinal test accuracy ({a.members} members, {a.rounds} rounds; server assumes "
          f"{a.assume} hostile)")  # fmt: skip
    print("| attack | hostile | " + " | ".join(a.rules) + " |")
    print("|---|---|" + "---|" * len(a.rules))
    for attack, b in rows:
        cells = []
        for rule in a.rules:
            s = bench.attack_cell(rule, attack if b else "sign_flip", b)
            out["attacks"].append({"attack": attack, "hostile": b, "rule": rule, **_keep(s)})
            cells.append(f"{s['test_accuracy']:.3f}")
        print(f"| {attack} | {b} | " + " | ".join(cells) + " |", flush=True)


def dp_table(bench: Bench, out: dict[str, Any]) -> None:
    a = bench.args
    settings = [(a.members, 1.0, a.clip)]
    if a.dp_members:
        settings.append((a.dp_members, a.dp_rate, a.dp_clip))
    print(f"\nDP-FedAvg ({a.dp_rounds} rounds, delta 1e-5): final test accuracy")
    print("| members | sampled per round | clip | target ε | ε spent | noise multiplier | acc |")
    print("|---|---|---|---|---|---|---|")
    for members, rate, clip in settings:
        for eps in [None, *a.epsilons]:
            s = bench.dp_cell(eps, members, rate, clip)
            out["dp"].append(
                {"members": members, "rate": rate, "clip": clip, "target_epsilon": eps, **_keep(s)}
            )
            spent = s.get("dp_epsilon")
            z = s.get("noise_multiplier")
            print(
                f"| {members} | {rate:g} | {clip:g} | {'—' if eps is None else f'{eps:g}'} | "
                f"{'∞ (non-private)' if spent is None else f'{spent:.2f}'} | "
                f"{'—' if z is None else f'{z:.3f}'} | {s['test_accuracy']:.3f} |",
                flush=True,
            )


def _keep(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("test_accuracy", "test_loss", "dp_epsilon", "noise_multiplier", "cpu_s")
    return {k: summary[k] for k in keys if k in summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--train-samples", type=int, default=10_000)
    p.add_argument("--test-samples", type=int, default=2_000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the MLP")
    p.add_argument("--hostile", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--assume", type=int, default=3, help="hostile members the server assumes")
    p.add_argument("--noise-std", type=float, default=1.0, help="the gaussian attack's std")
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    p.add_argument("--dp-rounds", type=int, default=30)
    p.add_argument("--clip", type=float, default=2.0, help="DP-FedAvg's clip norm (10 members)")
    p.add_argument("--dp-members", type=int, default=1000, help="0: only the ten-member run")
    p.add_argument("--dp-rate", type=float, default=0.1, help="sampling rate of --dp-members")
    p.add_argument("--dp-clip", type=float, default=0.15, help="clip norm with --dp-members")
    p.add_argument("--dp-train-samples", type=int, default=60_000, help="with --dp-members")
    p.add_argument("--skip", nargs="*", default=[], choices=["attacks", "dp"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="3 rounds, 2,000 samples, a few cells")
    p.add_argument("--out", help="write every cell to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.rounds = args.dp_rounds = 3
        args.train_samples, args.test_samples = 2_000, 500
        args.hostile, args.attacks = [2], ["scale100"]
        args.epsilons, args.dp_members = [8.0], 0
    import torch

    torch.set_num_threads(1)
    bench = Bench(args)
    out: dict[str, Any] = {"args": vars(args), "attacks": [], "dp": []}
    t0 = time.perf_counter()
    if "attacks" not in args.skip:
        attack_table(bench, out)
    if "dp" not in args.skip:
        dp_table(bench, out)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
