"""The comparison table of an experiment: one row per method, read back from its run folder.

Reading from the files (not from memory) means ``consortium report RUN_DIR`` shows exactly
what a finished, resumed or copied run holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

#: Console width when output is not a terminal: the widest table (unlearning) fits in full.
WIDE = 240


def report_console(**kwargs: Any) -> Console:
    """A console for tables: the terminal's width on a terminal, else wide enough that no
    number is cut (rich squeezes a table to 80 columns when output goes to a file, a pipe or
    a notebook, and shows ``0.10…`` for ``0.1034``)."""
    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=WIDE, **kwargs)

COLUMNS: list[tuple[str, str]] = [
    ("test_accuracy", "test acc"),
    ("mean_client_accuracy", "mean member acc"),
    ("min_client_accuracy", "min member acc"),
    ("rounds", "rounds"),
    ("wall_time_s", "time (s)"),
    ("bytes_up_total", "MB up"),
    ("bytes_down_total", "MB down"),
    ("client_failures", "failures"),
    ("replies_rejected", "rejected"),
]

# Shown only when some method reports them (regression tasks have no accuracy).
OPTIONAL_COLUMNS: list[tuple[str, str]] = [
    ("mean_rmse", "mean RMSE"),
    ("mean_explained_variance", "mean expl. var."),
]


def columns(summaries: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns: the fixed ones, after the optional ones some summary holds."""
    extra = [c for c in OPTIONAL_COLUMNS if any(c[0] in s for s in summaries.values())]
    return extra + COLUMNS


def method_dirs(run_dir: Path) -> list[Path]:
    """Method folders of an experiment run (those holding a summary), in the configured order."""
    run_dir = Path(run_dir)
    order: list[str] = []
    config = run_dir / "config.json"
    if config.exists():
        order = list(json.loads(config.read_text()).get("methods", []))
    # Unlearning requests (``unlearn-*/``, marked by their request.json) are not methods.
    found = {
        p.name: p
        for p in run_dir.iterdir()
        if (p / "summary.json").exists() and not (p / "request.json").exists()
    }
    return [found[m] for m in order if m in found] + sorted(
        p for n, p in found.items() if n not in order
    )


def collect(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Summary of each method, by method name."""
    return {p.name: json.loads((p / "summary.json").read_text()) for p in method_dirs(run_dir)}


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key.startswith("bytes"):
        return f"{value / 1e6:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}" if key == "wall_time_s" else f"{value:.4f}"
    return str(value)


def summary_rows(summaries: dict[str, dict[str, Any]]) -> list[list[str]]:
    cols = columns(summaries)
    return [[name] + [_fmt(k, s.get(k)) for k, _ in cols] for name, s in summaries.items()]


def summary_table(summaries: dict[str, dict[str, Any]], title: str = "") -> Table:
    table = Table(title=title or None)
    table.add_column("method", style="bold")
    for _, label in columns(summaries):
        table.add_column(label, justify="right")
    for row in summary_rows(summaries):
        table.add_row(*row)
    return table


def summary_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    header = ["method"] + [label for _, label in columns(summaries)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(summaries)]
    return "\n".join(lines) + "\n"
