"""The fair-reward comparison as the Aequa paper frames it: methods × datasets × partitions × seeds.

Runs Aequa (post-training rewards), its training-time variant, CGSV, IAFL and FedAvg on every
dataset (digits, MNIST: ``mnist5k``, Fashion-MNIST) and partition (homogeneous, Dirichlet
label skew, quantity skew, #label-K) for every seed, and prints per cell (dataset ×
partition) and method the mean ± std over the seeds of

* **ρ** — Pearson correlation of contributions (standalone accuracy on the server's validation
  split) and reward accuracies on the server's test set;
* **IPR** — share of members whose reward, on the server's test set, is at least as accurate
  as the model they trained alone (IAFL's incentivised participation rate, as its code scores
  it: on one common test set);
* **acc** — the full-width (Aequa) / server model's test accuracy;

then a "wins" count like the paper's: in how many cells Aequa is best on each metric, and in how
many (cell, other method) pairs it is ahead. The ``standalone`` row is the fair-reward methods'
shared standalone phase (every member trains alone for the same epochs; its acc is the mean of
those models' test accuracies), so it is not trained twice. FedAvg gives every member the same
model, so its ρ is undefined ("—") and its IPR compares that one model with each member's
standalone model.

Each cell is the experiment file of its dataset (``aequa_digits.toml``, ``aequa_mnist.toml``,
``aequa_fmnist.toml``) with the partition and the seed overridden, so
``consortium run experiments/aequa_fmnist.toml --set data.partition=dirichlet --set seed=1``
reproduces one run of the table.

    python experiments/fairness_table.py                          # the whole table (~65 min)
    python experiments/fairness_table.py --datasets digits --seeds 0
    python experiments/fairness_table.py --resume                 # continue interrupted runs
    python experiments/fairness_table.py --report-only            # re-read finished runs

Run folders go to ``--out`` (default ``runs/fairness``) as ``<dataset>-<partition>-s<seed>``;
the tables are written there as ``fairness_table.md`` and ``fairness_table.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from consortium.experiment import load_experiment, run_experiment
from consortium.metrics.fairness import ipr
from consortium.report.summary import collect

HERE = Path(__file__).resolve().parent
DATASETS = {
    "digits": "aequa_digits.toml",
    "mnist": "aequa_mnist.toml",
    "fashion_mnist": "aequa_fmnist.toml",
}
PARTITIONS = ("homogeneous", "dirichlet", "quantity", "label_k")
RUN_METHODS = ["fedavg", "aequa", "aequa_training_time", "cgsv", "iafl"]
METHODS = ["aequa", "aequa_training_time", "cgsv", "iafl", "fedavg", "standalone"]
METRICS = [("pearson", "ρ"), ("ipr", "IPR"), ("accuracy", "acc")]
AEQUA = "aequa"


def method_values(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """ρ, IPR and accuracy of every method of one run (``None``: undefined)."""
    reference = next((s for s in summaries.values() if s.get("standalone_test_accuracy")), {})
    alone = reference.get("standalone_test_accuracy") or {}
    rows: dict[str, dict[str, Any]] = {}
    for method, s in summaries.items():
        if method == "fedavg":
            # One model for all: ρ is undefined; IPR compares it with each standalone model.
            same = dict.fromkeys(alone, s.get("test_accuracy"))
            value = ipr(same, alone) if alone else None
            rows[method] = {"pearson": None, "ipr": value, "accuracy": s.get("test_accuracy")}
        else:
            rows[method] = {
                "pearson": s.get("pearson"),
                "ipr": s.get("ipr"),
                "accuracy": s.get("test_accuracy"),
            }
    if alone:
        rows["standalone"] = {
            "pearson": None,
            "ipr": None,
            "accuracy": statistics.fmean(alone.values()),
        }
    return {m: {k: defined(v) for k, v in r.items()} for m, r in rows.items()}


def defined(value: Any) -> float | None:
    """A finite float, or ``None`` (undefined: NaN, missing)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (0 for one value) and count of the defined values."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)


def aggregate(
    runs: Mapping[tuple[str, str, int], Mapping[str, Mapping[str, Any]]],
) -> dict[tuple[str, str], dict[str, dict[str, tuple[float | None, float | None, int]]]]:
    """Per cell (dataset, partition), method and metric: mean, std and count over seeds."""
    cells: dict[tuple[str, str], dict[str, dict[str, list[float | None]]]] = {}
    for (dataset, part, _seed), rows in runs.items():
        cell = cells.setdefault((dataset, part), {})
        for method, values in rows.items():
            for key, _ in METRICS:
                cell.setdefault(method, {}).setdefault(key, []).append(values.get(key))
    return {
        c: {m: {k: mean_std(v) for k, v in by.items()} for m, by in methods.items()}
        for c, methods in cells.items()
    }


def wins(
    table: Mapping[tuple[str, str], Mapping[str, Mapping[str, tuple[Any, Any, int]]]],
    method: str = AEQUA,
) -> dict[str, dict[str, Any]]:
    """Per metric: cells where ``method`` has the best mean (ties count as wins), how many
    cells had a value for it, and per other method the cells where ``method`` is strictly ahead
    (out of the cells where both are defined)."""
    out: dict[str, dict[str, Any]] = {}
    for key, _ in METRICS:
        best = cells = 0
        ahead: dict[str, list[int]] = {}
        for by_method in table.values():
            mine = by_method.get(method, {}).get(key, (None, None, 0))[0]
            if mine is None:
                continue
            cells += 1
            others = {
                m: v[key][0]
                for m, v in by_method.items()
                if m != method and v.get(key, (None,))[0] is not None
            }
            if all(mine >= o - 1e-12 for o in others.values()):
                best += 1
            for m, o in others.items():
                count = ahead.setdefault(m, [0, 0])
                count[0] += mine > o + 1e-12
                count[1] += 1
        total = [sum(c[0] for c in ahead.values()), sum(c[1] for c in ahead.values())]
        out[key] = {"best": best, "cells": cells, "ahead": ahead, "ahead_total": total}
    return out


def fmt(stats: tuple[float | None, float | None, int]) -> str:
    mean, std, _ = stats
    return "—" if mean is None else f"{mean:.3f} ± {std:.3f}"


def markdown(
    table: Mapping[tuple[str, str], Mapping[str, Mapping[str, tuple[Any, Any, int]]]],
    won: Mapping[str, Mapping[str, Any]],
    seeds: int,
) -> str:
    header = "| dataset | partition | method | " + " | ".join(
        f"{lab} (mean ± std)" for _, lab in METRICS
    )
    lines = [header + " |", "|---|---|---|" + "---|" * len(METRICS)]
    for (dataset, part), by_method in table.items():
        for method in METHODS:
            if method not in by_method:
                continue
            cells = [fmt(by_method[method].get(k, (None, None, 0))) for k, _ in METRICS]
            lines.append(f"| {dataset} | {part} | {method} | " + " | ".join(cells) + " |")
    others = [m for m in METHODS if m != AEQUA]
    lines += [
        "",
        f"Wins of Aequa over {len(table)} cells ({seeds} seed(s) each; best = highest mean, "
        "ties count; 'ahead of X': cells where Aequa's mean is higher than X's):",
        "",
        "| metric | best of all | " + " | ".join(f"ahead of {m}" for m in others) + " | total |",
        "|---|---|" + "---|" * (len(others) + 1),
    ]
    for key, label in METRICS:
        w = won[key]
        pairs = []
        for m in others:
            a = w["ahead"].get(m)
            pairs.append("—" if a is None else f"{a[0]}/{a[1]}")
        total = w["ahead_total"]
        lines.append(
            f"| {label} | {w['best']}/{w['cells']} | "
            + " | ".join(pairs)
            + f" | {total[0]}/{total[1]} |"
        )
    return "\n".join(lines) + "\n"


def run_cell(
    dataset: str,
    part: str,
    seed: int,
    out: Path,
    args: argparse.Namespace,
    console: Console,
) -> dict[str, dict[str, Any]]:
    """One experiment run (all methods on one dataset, partition and seed); its summaries."""
    name = f"{dataset}-{part}-s{seed}"
    run_dir = out / name
    if args.report_only or (args.resume and (run_dir / "summary.json").exists()):
        return collect(run_dir) if run_dir.exists() else {}
    overrides = [
        f'data.partition="{part}"',
        f"seed={seed}",
        f'name="{name}"',
        "methods=[" + ", ".join(f'"{m}"' for m in RUN_METHODS) + "]",
        *args.overrides,
    ]
    exp = load_experiment(HERE / DATASETS[dataset], overrides)
    console.rule(name)
    t0 = time.perf_counter()
    result = run_experiment(
        exp,
        run_dir,
        resume=args.resume,
        overwrite=not args.resume,
        progress=args.progress,
        console=console,
    )
    console.print(f"{name}: {time.perf_counter() - t0:.0f} s")
    return dict(result.summaries)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=PARTITIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/fairness"))
    p.add_argument("--resume", action="store_true", help="keep finished runs, continue the rest")
    p.add_argument("--report-only", action="store_true", help="only read runs in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args()

    console = Console()
    runs: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for dataset in args.datasets:
        for part in args.partitions:
            for seed in args.seeds:
                summaries = run_cell(dataset, part, seed, args.out, args, console)
                if summaries:
                    runs[(dataset, part, seed)] = method_values(summaries)
    table = aggregate(runs)
    won = wins(table)
    text = markdown(table, won, len(args.seeds))
    console.print(text, markup=False, highlight=False)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fairness_table.md").write_text(text)
    records = {
        "runs": [
            {"dataset": d, "partition": p_, "seed": s, "methods": rows}
            for (d, p_, s), rows in sorted(runs.items())
        ],
        "cells": [
            {
                "dataset": d,
                "partition": p_,
                "methods": {
                    m: {k: dict(zip(("mean", "std", "n"), v, strict=True)) for k, v in by.items()}
                    for m, by in methods.items()
                },
            }
            for (d, p_), methods in table.items()
        ],
        "wins": won,
    }
    (args.out / "fairness_table.json").write_text(json.dumps(records, indent=2))
    console.print(f"table: {args.out / 'fairness_table.md'}")


if __name__ == "__main__":
    main()
