"""The unlearning report: one table and one plot per request folder, from its own files.

An unlearning folder (``RUN/unlearn-<request>/``) holds ``request.json``, one folder per method
and ``summary.json`` with every method's verification metrics; :func:`write_unlearning_report`
renders ``summary.md`` and ``unlearning.png`` from those files alone, so the report can be redrawn
at any time without touching the results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.table import Table

from consortium.report.style import finish

MARKER = "request.json"

COLUMNS = [
    ("forget_accuracy", "forget acc"),
    ("forget_test_accuracy", "forget test acc"),
    ("retain_test_accuracy", "retain test acc"),
    ("test_accuracy", "test acc"),
    ("mia_loss_threshold", "MIA loss"),
    ("mia_shadow", "MIA shadow"),
    ("wall_time_s", "time (s)"),
    ("time_vs_retrain", "time / retrain"),
    ("cpu_vs_retrain", "CPU / retrain"),
    ("bytes_up_total", "MB up"),
    ("bytes_down_total", "MB down"),
    ("parameters_touched", "params changed"),
]


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "—"
    if key.startswith("bytes"):
        return f"{v / 1e6:.2f}"
    if key == "wall_time_s":
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.3f}" if key in ("time_vs_retrain", "cpu_vs_retrain") else f"{v:.4f}"
    return str(v)


def unlearning_table(summaries: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("method", style="bold")
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    for name, s in summaries.items():
        table.add_row(name, *[_cell(key, s.get(key)) for key, _ in COLUMNS])
    return table


def unlearning_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    header = ["method"] + [label for _, label in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        cells = [_cell(key, s.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot_unlearning(summaries: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Per method: accuracy on the forgotten data, on retained test data, and MIA success."""
    keys = [
        ("forget_accuracy", "forget (train)"),
        ("retain_test_accuracy", "retain (test)"),
        ("mia_loss_threshold", "MIA (loss)"),
    ]
    methods = list(summaries)
    if not methods:
        return None
    width = 0.8 / len(keys)
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods) + 2), 4.5))
    for i, (key, label) in enumerate(keys):
        vals = [summaries[m].get(key) for m in methods]
        bars = ax.bar(x + i * width, [np.nan if v is None else v for v in vals], width,
                      label=label)  # fmt: skip
        # A value of 0 (the forgotten data no longer recognised) is a bar of no height: say it.
        ax.bar_label(bars, ["n/a" if v is None else f"{v:.2f}" for v in vals], fontsize=6,
                     padding=1)  # fmt: skip
    ax.set_xticks(x + width * (len(keys) - 1) / 2)
    ax.set_xticklabels(methods, rotation=20, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("fraction")
    ax.grid(alpha=0.3, axis="y")
    request = out.parent.name.removeprefix("unlearn-")
    ax.set_title(f"Unlearning {request}: forgotten vs retained accuracy, membership inference")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(keys), fontsize=8)
    return finish(fig, out)


def is_unlearning_folder(path: str | Path) -> bool:
    """Whether ``path`` holds the results of an unlearning request."""
    return (Path(path) / MARKER).is_file()


def write_unlearning_report(dest: str | Path) -> Table:
    """(Re)write ``summary.md`` and ``unlearning.png`` of an unlearning folder from its
    ``summary.json``; returns the table for printing."""
    dest = Path(dest)
    summaries = json.loads((dest / "summary.json").read_text())
    (dest / "summary.md").write_text(unlearning_markdown(summaries))
    plot_unlearning(summaries, dest / "unlearning.png")
    return unlearning_table(summaries, f"unlearning {dest.name.removeprefix('unlearn-')}")
