"""Plots of FedRA-family runs, read back from run folders (``metrics.jsonl``,
``summary.json``): accuracy per round per method, per-domain accuracy bars, and each member's
cost (peak memory relative to the full model, training time)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from consortium.core.run import read_jsonl


def _save(fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_accuracy_rounds(method_dirs: Mapping[str, Path], out: Path) -> Path | None:
    """Mean per-domain accuracy (or overall accuracy) of the released model per round."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = False
    for label, d in method_dirs.items():
        rows = [r for r in read_jsonl(d / "metrics.jsonl") if r.get("test_accuracy") is not None]
        if not rows:
            continue
        key = "mean_domain_accuracy" if "mean_domain_accuracy" in rows[0] else "test_accuracy"
        ax.plot([r["round"] for r in rows], [r[key] for r in rows], marker="o", label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round")
    ax.set_ylabel("mean domain accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out)


def plot_domain_accuracy(
    summaries: Mapping[str, Mapping[str, Any]], out: Path, domain_names: list[str] | None = None
) -> Path | None:
    """Grouped bars: each domain's accuracy under each method, and their mean."""
    per = {m: s["domain_accuracy"] for m, s in summaries.items() if s.get("domain_accuracy")}
    if not per:
        return None
    domains = sorted({d for v in per.values() for d in v}, key=int)
    names = [domain_names[int(d)] if domain_names else d for d in domains] + ["mean"]
    fig, ax = plt.subplots(figsize=(min(14, max(7, 0.5 * len(per) * len(names))), 4.5))
    width = 0.8 / len(per)
    for i, (method, acc) in enumerate(per.items()):
        values = [acc.get(d, np.nan) for d in domains]
        values.append(float(np.nanmean(values)))
        ax.bar(np.arange(len(names)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out)


def plot_member_cost(summaries: Mapping[str, Mapping[str, Any]], out: Path) -> Path | None:
    """Per member: peak training memory relative to the full model, and mean training time
    per round, under each method."""
    per = {m: s["member_cost"] for m, s in summaries.items() if s.get("member_cost")}
    if not per:
        return None
    members = sorted({c for v in per.values() for c in v}, key=int)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    width = 0.8 / len(per)
    for i, (method, cost) in enumerate(per.items()):
        xs = np.arange(len(members)) + i * width
        top.bar(xs, [cost.get(c, {}).get("peak_vs_full", np.nan) for c in members], width)
        bottom.bar(
            xs, [cost.get(c, {}).get("train_time_s", np.nan) for c in members], width, label=method
        )
    top.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    top.set_ylabel("peak memory / full model")
    bottom.set_ylabel("training time per round (s)")
    bottom.set_xticks(np.arange(len(members)) + 0.4 - width / 2, [f"member {c}" for c in members])
    bottom.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out)
