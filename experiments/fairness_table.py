"""One command for the fair-reward comparison: four partitions, one table.

Runs Aequa (post-training and training-time rewards), CGSV, IAFL and FedAvg on each partition
(homogeneous, Dirichlet label skew, quantity skew, #label-K) and prints, per partition and
method: Pearson ρ between contributions and reward accuracies (on the server's test set),
IPR (share of members whose reward beats what they trained alone, on their own test views),
the full-width / server model's test accuracy and the members' mean reward accuracy.

    python experiments/fairness_table.py                 # Fashion-MNIST (aequa_fmnist_*.toml)
    python experiments/fairness_table.py --quick         # digits, all four partitions
    python experiments/fairness_table.py --resume        # continue interrupted runs
    python experiments/fairness_table.py --set federation.rounds=5

Run folders go to ``--out`` (default ``runs/fairness``); the table is also written there as
``fairness_table.md`` and ``fairness_table.json``. FedAvg gives every member the same model,
so its ρ on one test set is undefined (printed "—"); its IPR uses the same standalone
accuracies as the others (the shared standalone phase of the fair-reward methods).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from consortium.experiment import load_experiment, run_experiment
from consortium.metrics.fairness import ipr, pearson
from consortium.report.fairness import write_run_fairness_plots

HERE = Path(__file__).resolve().parent
PARTITIONS = ("homogeneous", "dirichlet", "quantity", "label_k")
COLUMNS = [
    ("pearson", "ρ"),
    ("ipr", "IPR"),
    ("test_accuracy", "full-width acc"),
    ("mean_client_accuracy", "mean member acc"),
    ("ipr_global", "IPR (test set)"),
]


def fedavg_fairness(fedavg: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """ρ and IPR of FedAvg's one model, against a fair-reward method's contributions and
    standalone accuracies."""
    contributions = reference.get("contributions", {})
    own = fedavg.get("client_accuracy", {})
    rewards = dict.fromkeys(contributions, fedavg.get("test_accuracy"))
    out = {"pearson": pearson(contributions, rewards)}
    if reference.get("standalone_accuracy"):
        out["ipr"] = ipr(own, reference["standalone_accuracy"])
    if reference.get("standalone_test_accuracy"):
        out["ipr_global"] = ipr(rewards, reference["standalone_test_accuracy"])
    return out


def rows_for(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Table values per method of one run."""
    reference = next(
        (s for s in summaries.values() if s.get("standalone_accuracy") is not None), {}
    )
    rows: dict[str, dict[str, Any]] = {}
    for method, s in summaries.items():
        row = {key: s.get(key) for key, _ in COLUMNS}
        if method == "fedavg":
            row.update(fedavg_fairness(s, reference))
        elif method == "standalone":
            row.update(pearson=None, ipr=None, ipr_global=None)
        rows[method] = row
    return rows


def clean(value: Any) -> Any:
    """JSON has no NaN: undefined values become null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST")
    p.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=PARTITIONS)
    p.add_argument("--out", type=Path, default=Path("runs/fairness"))
    p.add_argument("--resume", action="store_true", help="continue runs in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args()

    console = Console()
    table_rows: list[tuple[str, str, dict[str, Any]]] = []
    for part in args.partitions:
        if args.quick:
            path = HERE / "aequa_digits.toml"
            overrides = [f'data.partition="{part}"', f'name="aequa-digits-{part}"']
        else:
            path = HERE / f"aequa_fmnist_{part}.toml"
            overrides = []
        exp = load_experiment(path, overrides + list(args.overrides))
        run_dir = args.out / exp.name
        console.rule(f"{exp.name}")
        result = run_experiment(
            exp,
            run_dir,
            resume=args.resume,
            overwrite=not args.resume,
            progress=args.progress,
            console=console,
        )
        write_run_fairness_plots(run_dir)
        for method, row in rows_for(result.summaries).items():
            table_rows.append((part, method, row))

    table = Table(title="fair rewards: Pearson ρ (contribution vs reward test accuracy), IPR")
    table.add_column("partition")
    table.add_column("method", style="bold")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    lines = [
        "| partition | method | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for part, method, row in table_rows:
        cells = [fmt(row.get(key)) for key, _ in COLUMNS]
        table.add_row(part, method, *cells)
        lines.append(f"| {part} | {method} | " + " | ".join(cells) + " |")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fairness_table.md").write_text("\n".join(lines) + "\n")
    records = [
        {"partition": p_, "method": m, **{k: clean(v) for k, v in r.items()}}
        for p_, m, r in table_rows
    ]
    (args.out / "fairness_table.json").write_text(json.dumps(records, indent=2))
    console.print(f"table: {args.out / 'fairness_table.md'}")


if __name__ == "__main__":
    main()
