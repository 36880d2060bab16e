"""Reports read back from run folders: summary tables, plots and each family's own report.

Every report is drawn from the files a run wrote, never from memory, so a finished, resumed or
copied run can be reported again. A method names its family report (``"fairness"``,
``"fedra"``, ``"mtl"``) when it registers; the unlearning action's folders have their own.
Matplotlib and the family modules are imported only when a report is drawn.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from consortium.core.rundir import writing
from consortium.report.summary import (
    collect,
    method_dirs,
    report_console,
    summary_markdown,
    summary_table,
)

__all__ = [
    "FAMILY_REPORTS",
    "collect",
    "family_report",
    "method_dirs",
    "report_console",
    "summary_markdown",
    "summary_table",
    "write_plots",
    "write_report",
]

#: Family report name -> "module:function" drawing it from a run folder.
FAMILY_REPORTS: dict[str, str] = {
    "fairness": "consortium.report.fairness:write_run_fairness_plots",
    "fedra": "consortium.report.fedra:write_fedra_report",
    "mtl": "consortium.report.mtl:write_mtl_report",
    "unlearn": "consortium.report.unlearning:write_unlearning_report",
}


def _resolve(target: str) -> Callable[[Path], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def family_report(report: str | Callable[[Path], Any], run_dir: str | Path) -> Any:
    """Draw a family's report (a name of :data:`FAMILY_REPORTS`, or a callable) on a run."""
    fn = _resolve(FAMILY_REPORTS[report]) if isinstance(report, str) else report
    return fn(Path(run_dir))


def write_report(run_dir: str | Path, plots: bool = True) -> Table:
    """(Re)write ``summary.json``, ``summary.md`` and (unless ``plots`` is false: see
    :func:`write_plots`) the PNG plots of an experiment run; returns the summary table."""
    run_dir = Path(run_dir)
    summaries = _summaries(run_dir)
    with writing(run_dir / "summary.json"):
        (run_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    with writing(run_dir / "summary.md"):
        (run_dir / "summary.md").write_text(summary_markdown(summaries))
    if plots:
        write_plots(run_dir, summaries)
    return summary_table(summaries, title=run_dir.name)


def write_plots(run_dir: str | Path, summaries: dict[str, Any] | None = None) -> None:
    """Draw ``accuracy.png`` and ``client_accuracy.png`` of an experiment run (matplotlib is
    imported here, so a run that only needs its table never pays for it)."""
    from consortium.report.plots import plot_accuracy_per_round, plot_client_accuracy

    run_dir = Path(run_dir)
    summaries = _summaries(run_dir) if summaries is None else summaries
    with writing(run_dir / "accuracy.png"):
        plot_accuracy_per_round(method_dirs(run_dir), summaries, run_dir / "accuracy.png")
    with writing(run_dir / "client_accuracy.png"):
        plot_client_accuracy(summaries, run_dir / "client_accuracy.png")


def _summaries(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    summaries = collect(run_dir)
    if not summaries:
        raise FileNotFoundError(f"{run_dir}: no method runs (no */summary.json or */stopped.json)")
    return summaries
