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
    ("mia_loss", "MIA loss"),
    ("mia_shadow", "MIA shadow"),
    ("mia_auc", "MIA AUC"),
    ("mia_auc_gap", "AUC gap"),
    ("divergence", "JS to retrain"),
    ("inversion_forget", "inversion"),
    ("relearn_rounds", "relearn"),
    ("wall_time_s", "time (s)"),
    ("time_vs_retrain", "time / retrain"),
    ("cpu_vs_retrain", "CPU / retrain"),
    ("bytes_up_total", "MB up"),
    ("parameters_touched", "params changed"),
]


def _cell(key: str, v: Any, s: dict[str, Any] | None = None) -> str:
    if key == "relearn_rounds" and s is not None and "relearn_max" in s and v is None:
        return f"> {s['relearn_max']}"
    if v is None:
        return "—"
    if key.startswith("bytes"):
        return f"{v / 1e6:.2f}"
    if key == "wall_time_s":
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.3f}" if key in ("time_vs_retrain", "cpu_vs_retrain") else f"{v:.4f}"
    return str(v)


#: The printed table's columns (a terminal is narrower than ``summary.md``, which has all).
PRINTED = (
    "forget_accuracy",
    "retain_test_accuracy",
    "mia_auc",
    "divergence",
    "inversion_forget",
    "relearn_rounds",
    "cpu_vs_retrain",
)


def unlearning_table(summaries: dict[str, dict[str, Any]], title: str) -> Table:
    columns = [(key, label) for key, label in COLUMNS if key in PRINTED]
    table = Table(title=title)
    table.add_column("method", style="bold")
    for _, label in columns:
        table.add_column(label, justify="right")
    for name, s in summaries.items():
        table.add_row(name, *[_cell(key, s.get(key), s) for key, _ in columns])
    return table


def unlearning_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    header = ["method"] + [label for _, label in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in summaries.items():
        cells = [_cell(key, s.get(key), s) for key, _ in COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


#: What the plot's left panel shows per method (fractions; the retrained model's bar is the
#: value to match).
PLOTTED = [
    ("forget_accuracy", "forget acc"),
    ("retain_test_accuracy", "retain test acc"),
    ("mia_loss", "MIA loss"),
    ("mia_auc", "MIA AUC"),
    ("divergence", "JS to retrain"),
    ("inversion_forget", "inversion"),
]


def plot_unlearning(summaries: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Per method: accuracies, attacks, divergence and inversion (left, the retrained model is
    the gold standard), and rounds to relearn the forgotten data (right)."""
    methods = list(summaries)
    if not methods:
        return None
    keys = [
        (k, label) for k, label in PLOTTED if any(summaries[m].get(k) is not None for m in methods)
    ]
    width = 0.8 / max(len(keys), 1)
    x = np.arange(len(methods))
    fig, (ax, ax_r) = plt.subplots(
        1,
        2,
        figsize=(max(8, 1.5 * len(methods) + 4), 4.8),
        gridspec_kw={"width_ratios": [3, 1]},
    )
    for i, (key, label) in enumerate(keys):
        vals = [summaries[m].get(key) for m in methods]
        bars = ax.bar(x + i * width, [np.nan if v is None else v for v in vals], width,
                      label=label)  # fmt: skip
        # A value of 0 (the forgotten data no longer recognised) is a bar of no height: say it.
        ax.bar_label(bars, ["n/a" if v is None else f"{v:.2f}" for v in vals], fontsize=6,
                     padding=1)  # fmt: skip
    ax.set_xticks(x + width * (len(keys) - 1) / 2)
    ax.set_xticklabels(methods, rotation=25, ha="right")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("fraction (JS: bits)")
    ax.grid(alpha=0.3, axis="y")
    request = out.parent.name.removeprefix("unlearn-")
    ax.set_title(f"Unlearning {request}: forgotten vs retained accuracy, membership inference")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8)
    top = max([summaries[m].get("relearn_max") or 0 for m in methods] + [1])
    rounds = []
    for m in methods:
        s = summaries[m]
        r = s.get("relearn_rounds")
        rounds.append(np.nan if "relearn_max" not in s else (top + 1 if r is None else r))
    bars = ax_r.bar(x, rounds, color="tab:gray")
    for bar, r in zip(bars, rounds, strict=True):
        if np.isnan(r):
            continue
        if r == top + 1:
            bar.set_hatch("//")
        ax_r.annotate(  # every bar labelled: 0 rounds (never forgot) draws no bar
            f">{top}" if r == top + 1 else f"{int(r)}",
            (bar.get_x() + bar.get_width() / 2, r),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax_r.set_xticks(x)
    ax_r.set_xticklabels(methods, rotation=25, ha="right")
    ax_r.set_ylabel("relearn rounds")
    ax_r.set_ylim(0, top + 2)
    ax_r.grid(alpha=0.3, axis="y")
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
