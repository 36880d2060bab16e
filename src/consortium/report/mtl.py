"""Plots of a multi-task run, drawn from its files (metrics.jsonl, model.npz, summary.json).

Reading files rather than memory means a finished, resumed or copied run folder can be plotted
again at any time. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from consortium.core.run import METRICS, MODEL, SUMMARY, read_jsonl
from consortium.report.style import finish, plot_curve, round_axis


def plot_convergence(rows: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """Relative duality gap per round (log scale) and primal / dual objectives; Ω-steps are
    marked, since each changes the W-step's problem and the gap jumps."""
    pts = [r for r in rows if r.get("relative_gap") is not None]
    if not pts:
        return None
    fig, (ax_gap, ax_obj) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = [r["round"] for r in pts]
    gaps = [max(float(r["relative_gap"]), 1e-17) for r in pts]
    ax_gap.semilogy(rounds, gaps, lw=1.2)
    for r in rows:
        if r.get("omega_step"):
            ax_gap.axvline(r["round"], color="grey", lw=0.5, alpha=0.4)
            ax_obj.axvline(r["round"], color="grey", lw=0.5, alpha=0.4)
    round_axis(ax_gap)
    ax_gap.set_ylabel("relative duality gap (P - D) / P")
    ax_gap.set_title(f"Convergence — {out.parent.name} (grey: Ω-steps)")
    ax_gap.grid(alpha=0.3, which="both")
    ax_obj.plot(rounds, [r["primal"] for r in pts], label="primal P(W)")
    ax_obj.plot(rounds, [r["dual"] for r in pts], label="dual D(α)")
    round_axis(ax_obj)
    ax_obj.set_ylabel("objective")
    ax_obj.set_title("primal and dual objectives")
    ax_obj.legend(loc="upper right")
    ax_obj.grid(alpha=0.3)
    lo = min(r["dual"] for r in pts[len(pts) // 10 :] or pts)
    hi = max(r["primal"] for r in pts[len(pts) // 10 :] or pts)
    if hi > lo:
        ax_obj.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    return finish(fig, out)


def plot_bytes(rows: Sequence[Mapping[str, Any]], out: Path) -> Path | None:
    """Bytes sent up and down per round (all members together)."""
    pts = [r for r in rows if r.get("bytes_up", 0) or r.get("bytes_down", 0)]
    if len(pts) < 2:  # one exchange (single-task, a one-shot method): no curve to draw
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [r["round"] for r in pts], [r["bytes_up"] / 1e3 for r in pts], label="up (members → server)"
    )
    ax.plot(
        [r["round"] for r in pts],
        [r["bytes_down"] / 1e3 for r in pts],
        label="down (server → members)",
        ls="--",
    )
    round_axis(ax)
    ax.set_ylabel("kB per round")
    ax.set_title(f"Communication per round — {out.parent.name}")
    top = max(max(r["bytes_up"], r["bytes_down"]) for r in pts) / 1e3
    ax.set_ylim(0, 1.15 * top)  # a constant curve would sit on the frame
    ax.legend()
    ax.grid(alpha=0.3)
    return finish(fig, out)


def plot_correlation(learned: np.ndarray, true: np.ndarray | None, out: Path) -> Path:
    """Heatmap of the learned task correlation, next to the true one when known."""
    panels = [("learned task correlation", learned)]
    if true is not None:
        panels.append(("true task correlation", true))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    image = None
    for ax, (title, mat) in zip(axes[0], panels, strict=True):
        image = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("task")
        ax.set_ylabel("task")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.85)
    fig.suptitle(f"Task correlation — {out.parent.name}")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def write_method_plots(method_dir: str | Path) -> list[Path]:
    """Every plot one method's run folder supports: ``convergence.png``, ``bytes.png`` and
    ``task_correlation.png``."""
    d = Path(method_dir)
    rows = read_jsonl(d / METRICS)
    written = [
        plot_convergence(rows, d / "convergence.png"),
        plot_bytes(rows, d / "bytes.png"),
    ]
    if (d / MODEL).exists():
        model = np.load(d / MODEL)
        if "task_correlation" in model.files:
            true = model["true_correlation"] if "true_correlation" in model.files else None
            written.append(
                plot_correlation(model["task_correlation"], true, d / "task_correlation.png")
            )
    return [p for p in written if p is not None]


def plot_task_scores(run_dir: str | Path, out: Path) -> Path | None:
    """Per-task test score of every method of an experiment (tasks sorted by single-task
    score when it ran): RMSE for regression, accuracy for classification."""
    run_dir = Path(run_dir)
    per: dict[str, dict[str, float]] = {}
    key = None
    for p in sorted(run_dir.iterdir()):
        if not (p / SUMMARY).exists():
            continue
        s = json.loads((p / SUMMARY).read_text())
        for k in ("client_rmse", "client_accuracy"):
            if s.get(k):
                per[p.name], key = s[k], k
    if not per or key is None:
        return None
    ref = per.get("single_task") or next(iter(per.values()))
    order = sorted(ref, key=lambda c: ref[c])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, scores) in enumerate(per.items()):
        plot_curve(ax, name, range(len(order)), [scores.get(c, np.nan) for c in order], order=i)
    ax.set_xlabel("task (sorted by the single-task score)" if "single_task" in per else "task")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Test score per task — {run_dir.name}")
    ax.set_ylabel("test RMSE" if key == "client_rmse" else "test accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    return finish(fig, out)


# --- the Markdown summary and the whole report --------------------------------------------


SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("mean_rmse", "mean RMSE"),
    ("pooled_rmse", "pooled RMSE"),
    ("mean_explained_variance", "mean expl. var."),
    ("test_accuracy", "test acc"),
    ("mean_client_accuracy", "mean task acc"),
    ("objective", "objective"),
    ("relative_gap", "rel. gap"),
    ("omega_steps", "Ω-steps"),
    ("converged_round", "converged round"),
    ("correlation_sign_agreement", "sign agreement"),
    ("lambda2", "λ2"),
    ("lam", "λ"),
    ("bytes_up_total", "bytes up"),
    ("wall_time_s", "time (s)"),
)


def mtl_summary_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per method with the multi-task scores (the generic table shows accuracy only)."""
    keys = [
        (k, t) for k, t in SUMMARY_KEYS if any(s.get(k) is not None for s in summaries.values())
    ]
    lines = [
        "| method | " + " | ".join(t for _, t in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, s in summaries.items():
        cells = []
        for k, _ in keys:
            v = s.get(k)
            cells.append("—" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_mtl_report(run_dir: str | Path) -> list[Path]:
    """Plots and table of a finished multi-task experiment: in every method folder its
    convergence, bytes-per-round and task-correlation plots (what its files support), and at
    the top ``task_scores.png`` (every method's per-task test score) and ``mtl_summary.md``."""
    run_dir = Path(run_dir)
    written: list[Path] = []
    summaries: dict[str, dict[str, Any]] = {}
    for method_dir in sorted(p for p in run_dir.iterdir() if (p / "summary.json").exists()):
        written += write_method_plots(method_dir)
        summaries[method_dir.name] = json.loads((method_dir / "summary.json").read_text())
    scores = plot_task_scores(run_dir, run_dir / "task_scores.png")
    table = run_dir / "mtl_summary.md"
    table.write_text(mtl_summary_markdown(summaries))
    return [*written, *([scores] if scores else []), table]
