"""Plots of model rewards, drawn from a method's ``summary.json``.

* ``width_curve.png`` (Aequa): accuracy of the slimmable model against its width — the
  curve measured on the server's validation split, its monotone envelope used for the
  allocation, and each member's reward (width, test accuracy);
* ``contribution_vs_reward.png`` (every fair-reward method): each member's contribution
  against the test accuracy of its reward model, with Pearson ρ in the title.

Both are written into the method's run folder, from the files alone, so a finished, resumed
or copied run can be re-plotted: ``write_fairness_plots(RUN_DIR / "aequa")`` or
``write_run_fairness_plots(RUN_DIR)`` for every method of an experiment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from consortium.report.style import finish, label_points

WIDTH_CURVE = "width_curve.png"
CONTRIBUTION_VS_REWARD = "contribution_vs_reward.png"


def _fmt_rho(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    return f"{value:.3f}"


def plot_width_curve(summary: dict[str, Any], out: Path, title: str = "") -> Path | None:
    """Accuracy vs width (validation curve, monotone envelope, members' rewards)."""
    curve = summary.get("width_curve")
    if not curve or not curve.get("width"):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    split = summary.get("curve_split", "validation")
    ax.plot(curve["width"], curve["accuracy"], color="0.6", lw=1, label=f"measured ({split})")
    ax.plot(curve["width"], curve["monotone_accuracy"], color="C0", lw=2, label="monotone (used)")
    widths = summary.get("widths", {})
    rewards = summary.get("reward_test_accuracy", {})
    members = [m for m in widths if m in rewards]
    if members:
        ax.scatter(
            [widths[m] for m in members],
            [rewards[m] for m in members],
            color="C3",
            zorder=3,
            label="members' rewards (test)",
        )
    ax.set_xlabel("width p")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy vs width{' — ' + title if title else ''}")
    ax.legend(loc="lower right", fontsize=8)
    if members:
        label_points(ax, [widths[m] for m in members], [rewards[m] for m in members],
                     [f"member {m}" for m in members])  # fmt: skip
    return finish(fig, out)


def plot_contribution_vs_reward(summary: dict[str, Any], out: Path, title: str = "") -> Path | None:
    """Scatter of contributions against reward-model test accuracies (and own-view ones)."""
    contributions = summary.get("contributions") or {}
    rewards = summary.get("reward_test_accuracy") or {}
    members = [m for m in contributions if m in rewards]
    if not members:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [contributions[m] for m in members]
    ax.scatter(xs, [rewards[m] for m in members], color="C0", label="reward on server test set")
    own = summary.get("client_accuracy") or {}
    own_members = [m for m in members if m in own]
    if own_members:
        ax.scatter(
            [contributions[m] for m in own_members],
            [own[m] for m in own_members],
            color="C1",
            marker="x",
            label="reward on own test view",
        )
    kind = summary.get("contribution_kind", "contribution")
    ax.set_xlabel(f"contribution ({kind})")
    ax.set_ylabel("reward accuracy")
    ax.grid(alpha=0.3)
    rho = _fmt_rho(summary.get("pearson"))
    ax.set_title(f"Reward vs contribution{' — ' + title if title else ''} (Pearson ρ = {rho})")
    ax.legend(loc="lower right", fontsize=8)
    label_points(ax, xs, [rewards[m] for m in members], [f"member {m}" for m in members])
    return finish(fig, out)


def write_fairness_plots(method_dir: str | Path) -> list[Path]:
    """Write the plots a method's summary supports into its folder; returns the paths."""
    method_dir = Path(method_dir)
    path = method_dir / "summary.json"
    if not path.exists():
        return []
    summary = json.loads(path.read_text())
    made = [
        plot_width_curve(summary, method_dir / WIDTH_CURVE, method_dir.name),
        plot_contribution_vs_reward(summary, method_dir / CONTRIBUTION_VS_REWARD, method_dir.name),
    ]
    return [p for p in made if p is not None]


def write_run_fairness_plots(run_dir: str | Path) -> list[Path]:
    """:func:`write_fairness_plots` for every method folder of an experiment run."""
    run_dir = Path(run_dir)
    paths: list[Path] = []
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        paths += write_fairness_plots(sub)
    return paths
