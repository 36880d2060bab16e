"""PNG plots of a run: global accuracy per round, and accuracy per member.

Matplotlib runs headless (Agg); every figure is written into the run folder so a run can be
read on a machine without a screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from consortium.core.run import read_jsonl


def plot_accuracy_per_round(
    method_dirs: list[Path], summaries: dict[str, dict[str, Any]], out: Path
) -> Path | None:
    """Test accuracy of each method's global model per round; one-shot references (standalone:
    the mean of the members' own models) are drawn as a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for d in method_dirs:
        rows = [r for r in read_jsonl(d / "metrics.jsonl") if r.get("test_accuracy") is not None]
        if len(rows) > 1:
            ax.plot(
                [r["round"] for r in rows],
                [r["test_accuracy"] for r in rows],
                marker="o",
                markersize=3,
                label=d.name,
            )
            drawn = True
            continue
        value = summaries.get(d.name, {}).get("test_accuracy")
        if value is not None:  # one-shot references (standalone) have no curve
            ax.axhline(value, linestyle="--", color="grey", label=f"{d.name} (final)")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_client_accuracy(summaries: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Grouped bars: each member's test accuracy under each method."""
    per = {m: s["client_accuracy"] for m, s in summaries.items() if s.get("client_accuracy")}
    if not per:
        return None
    clients = sorted({int(c) for accs in per.values() for c in accs})
    width = 0.8 / len(per)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(clients) + 2), 4.5))
    x = np.arange(len(clients))
    for i, (method, accs) in enumerate(per.items()):
        ax.bar(x + i * width, [accs.get(str(c), np.nan) for c in clients], width, label=method)
    ax.set_xticks(x + width * (len(per) - 1) / 2)
    ax.set_xticklabels([str(c) for c in clients], fontsize=8 if len(clients) > 20 else 10)
    ax.set_xlabel("member")
    ax.set_ylabel("test accuracy on own test view")
    ax.set_ylim(0, 1.0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(len(per), 4))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
