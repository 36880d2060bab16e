"""The comparison table of an experiment: one row per method, read back from its run folder.

Reading from the files (not from memory) means ``consortium report RUN_DIR`` shows exactly
what a finished, resumed or copied run holds. The table tells the truth about each run: how
many rounds were skipped for too few replies, how many member failures and rejected replies
there were, and which methods stopped (their ``stopped.json``) and why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
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
    ("rounds_skipped", "skipped"),
    ("wall_time_s", "time (s)"),
    ("bytes_up_total", "MB up"),
    ("bytes_down_total", "MB down"),
    ("client_failures", "failures"),
    ("replies_rejected", "rejected"),
]

# Shown only when some method reports them (regression tasks have no accuracy; the fairness
# columns are the fair-reward methods': ρ and the headline IPR on the server's test set).
OPTIONAL_COLUMNS: list[tuple[str, str]] = [
    ("mean_rmse", "mean RMSE"),
    ("mean_explained_variance", "mean expl. var."),
    ("pearson", "ρ"),
    ("ipr", "IPR (test set)"),
    ("ipr_own_view", "IPR (own views)"),
    ("reward_accuracy_range", "reward acc range"),
    ("dp_epsilon", "ε (members)"),  # DP-FedAvg: member-level, at the run's δ
    ("dp_sgd_epsilon", "ε (samples)"),  # DP-SGD: the weakest member's sample-level ε
]
FAIRNESS_KEYS = frozenset({"pearson", "ipr", "ipr_own_view", "reward_accuracy_range"})


#: Shown only when some method did not finish.
STATUS_COLUMN = ("status", "status")


def columns(summaries: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns: the fixed ones, after the optional ones some summary holds (and
    a status column first when some method stopped)."""
    extra = [c for c in OPTIONAL_COLUMNS if any(c[0] in s for s in summaries.values())]
    status = [STATUS_COLUMN] if stopped(summaries) else []
    return status + extra + COLUMNS


def stopped(summaries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Why each method that stopped stopped, by method."""
    return {
        name: str(s.get("stop_reason", ""))
        for name, s in summaries.items()
        if s.get("status") == "stopped"
    }


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
        if _summary_file(p) is not None and not (p / "request.json").exists()
    }
    return [found[m] for m in order if m in found] + sorted(
        p for n, p in found.items() if n not in order
    )


def _summary_file(method_dir: Path) -> Path | None:
    """``summary.json`` of a finished run, else ``stopped.json`` of a stopped one."""
    for name in ("summary.json", "stopped.json"):
        if (method_dir / name).is_file():
            return method_dir / name
    return None


def collect(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Summary of each method (what it holds so far, for one that stopped), by method name."""
    out = {}
    for p in method_dirs(run_dir):
        path = _summary_file(p)
        assert path is not None
        out[p.name] = json.loads(path.read_text())
    return out


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"  # undefined (e.g. ρ when every member got the same model)
    if isinstance(value, list) and len(value) == 2:
        return f"{_fmt(key, value[0])}–{_fmt(key, value[1])}"
    if key.startswith("bytes"):
        return f"{value / 1e6:.2f}"
    if isinstance(value, float):
        if key == "wall_time_s":
            return f"{value:.1f}"
        if key.endswith("epsilon"):
            return f"{value:.2f}"
        return f"{value:.3f}" if key in FAIRNESS_KEYS else f"{value:.4f}"
    return str(value)


def summary_rows(summaries: dict[str, dict[str, Any]]) -> list[list[str]]:
    cols = columns(summaries)
    return [[name] + [_fmt(k, s.get(k)) for k, _ in cols] for name, s in summaries.items()]


def summary_table(summaries: dict[str, dict[str, Any]], title: str = "") -> Table:
    why = stopped(summaries)
    caption = "\n".join(f"{name} stopped: {reason}" for name, reason in why.items())
    table = Table(title=title or None, caption=escape(caption) or None, caption_justify="left")
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
    why = stopped(summaries)
    if why:
        lines.append("")
        lines += [f"* {name} stopped: {reason}" for name, reason in why.items()]
    return "\n".join(lines) + "\n"
