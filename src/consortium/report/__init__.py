"""Reports read back from run folders: summary tables and plots."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from consortium.report.plots import plot_accuracy_per_round, plot_client_accuracy
from consortium.report.summary import (
    collect,
    method_dirs,
    summary_markdown,
    summary_table,
)

__all__ = [
    "collect",
    "method_dirs",
    "plot_accuracy_per_round",
    "plot_client_accuracy",
    "summary_markdown",
    "summary_table",
    "write_report",
]


def write_report(run_dir: str | Path) -> Table:
    """(Re)write ``summary.json``, ``summary.md`` and the PNG plots of an experiment run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    summaries = collect(run_dir)
    if not summaries:
        raise FileNotFoundError(f"{run_dir}: no finished method runs (no */summary.json)")
    (run_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    (run_dir / "summary.md").write_text(summary_markdown(summaries))
    plot_accuracy_per_round(method_dirs(run_dir), summaries, run_dir / "accuracy.png")
    plot_client_accuracy(summaries, run_dir / "client_accuracy.png")
    return summary_table(summaries, title=run_dir.name)
