"""PNG plots of a run: global accuracy per round, and accuracy per member.

Matplotlib runs headless (Agg); every figure is written into the run folder so a run can be
read on a machine without a screen. Colours, markers and dashes per method come from
:mod:`consortium.report.style`, the same in every plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from consortium.core.run import read_jsonl
from consortium.report.style import finish, legend, method_style, plot_curve, round_axis, title


def plot_accuracy_per_round(
    method_dirs: list[Path], summaries: dict[str, dict[str, Any]], out: Path
) -> Path | None:
    """Test accuracy of each method's global model per round; one-shot references (standalone:
    the mean of the members' own models) are drawn as a line across, in their own colour."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = curves = 0
    for d in method_dirs:
        rows = [r for r in read_jsonl(d / "metrics.jsonl") if r.get("test_accuracy") is not None]
        if len(rows) > 1:
            plot_curve(ax, d.name, [r["round"] for r in rows], [r["test_accuracy"] for r in rows],
                       order=curves)  # fmt: skip
            curves += 1
            drawn += 1
            continue
        value = summaries.get(d.name, {}).get("test_accuracy")
        if value is not None:  # one-shot references (standalone) have no curve
            style = method_style(d.name)
            ax.axhline(value, color=style.color, linestyle=style.linestyle, linewidth=1.5,
                       label=f"{d.name} (final)")  # fmt: skip
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    round_axis(ax)
    ax.set_ylabel("test accuracy (server test set)")
    title(ax, "Global model accuracy per round", out.parent.name)
    ax.grid(alpha=0.3)
    legend(ax)
    return finish(fig, out)


def plot_client_accuracy(summaries: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Grouped bars: each member's test accuracy under each method."""
    per = {m: s["client_accuracy"] for m, s in summaries.items() if s.get("client_accuracy")}
    if not per:
        return None
    clients = sorted({int(c) for accs in per.values() for c in accs})
    width = 0.8 / len(per)
    fig, ax = plt.subplots(figsize=(min(14, max(6.5, 0.14 * len(clients) * len(per) + 3)), 4.5))
    x = np.arange(len(clients))
    for i, (method, accs) in enumerate(per.items()):
        values = [accs.get(str(c), np.nan) for c in clients]
        color = method_style(method).color
        ax.bar(x + i * width, values, width, label=method, color=color)
        for xi, value in zip(x + i * width, values, strict=True):
            if value == 0:  # a bar of height 0 is invisible: say 0, unlike a member with none
                ax.text(xi, 0.005, "0", ha="center", va="bottom", fontsize=6, color=color)
    ax.set_xticks(x + width * (len(per) - 1) / 2)
    step = max(1, len(clients) // 40)  # at most ~40 member labels, never overlapping
    ax.set_xticklabels([str(c) if i % step == 0 else "" for i, c in enumerate(clients)],
                       fontsize=8 if len(clients) > 20 else 10)  # fmt: skip
    ax.set_xlabel("member")
    ax.set_ylabel("accuracy on the member's own test view")
    ax.set_ylim(0, 1.0)
    title(ax, "Accuracy of each member's model", out.parent.name)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(len(per), 6), fontsize=8)
    return finish(fig, out)
