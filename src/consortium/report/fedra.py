"""Plots of FedRA-family runs, read back from run folders (``metrics.jsonl``,
``summary.json``): accuracy per round per method, per-domain accuracy bars, and each member's
cost (peak memory relative to the full model, training time)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from consortium.core.run import read_jsonl
from consortium.report.style import finish, method_style, plot_curve, round_axis

#: The methods of the family (the report compares those a run holds).
FEDRA_METHODS = ("fedra", "all_large", "all_small", "inclusivefl", "depthfl")


_save = finish


def plot_accuracy_rounds(method_dirs: Mapping[str, Path], out: Path) -> Path | None:
    """Mean per-domain accuracy (or overall accuracy) of the released model per round."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = 0
    for label, d in method_dirs.items():
        rows = [r for r in read_jsonl(d / "metrics.jsonl") if r.get("test_accuracy") is not None]
        if not rows:
            continue
        key = "mean_domain_accuracy" if "mean_domain_accuracy" in rows[0] else "test_accuracy"
        plot_curve(ax, label, [r["round"] for r in rows], [r[key] for r in rows], order=drawn)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    round_axis(ax)
    ax.set_title(f"Accuracy of the released model per round — {out.parent.name}")
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
        ax.bar(np.arange(len(names)) + i * width, values, width, label=method,
               color=method_style(method).color)  # fmt: skip
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_title(f"Accuracy per domain — {out.parent.name}")
    ax.set_xlabel("domain")
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
        color = method_style(method).color
        top.bar(xs, [cost.get(c, {}).get("peak_vs_full", np.nan) for c in members], width,
                color=color)  # fmt: skip
        bottom.bar(xs, [cost.get(c, {}).get("train_time_s", np.nan) for c in members], width,
                   label=method, color=color)  # fmt: skip
    top.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    top.set_title(f"Each member's training cost — {out.parent.name}")
    top.set_ylabel("peak memory / full model")
    bottom.set_ylabel("training time per round (s)")
    bottom.set_xticks(np.arange(len(members)) + 0.4 - width / 2, [f"member {c}" for c in members])
    bottom.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out)


# --- the Markdown report --------------------------------------------------------------------


def _per_round_bytes(method_dir: Path) -> tuple[float, float, dict[str, float]]:
    rows = [r for r in read_jsonl(method_dir / "metrics.jsonl") if r.get("phase") == "train"]
    if not rows:
        return 0.0, 0.0, {}
    up = float(np.mean([r["bytes_up"] for r in rows]))
    down = float(np.mean([r["bytes_down"] for r in rows]))
    members = sorted({c for r in rows for c in r.get("bytes_up_by_client", {})}, key=int)
    per = {c: float(np.mean([r["bytes_up_by_client"].get(c, 0) for r in rows])) for c in members}
    return up, down, per


def fedra_report(
    method_dirs: dict[str, Path],
    out_dir: str | Path,
    domain_names: list[str] | None = None,
    reference: str = "all_large",
) -> str:
    """Markdown tables (accuracy per domain; each member's peak memory relative to the full
    model and training time relative to ``reference``'s same member; bytes per round) and the
    plots of :mod:`consortium.algorithms.fedra.plots`, for runs of FedRA-family methods.

    ``method_dirs`` maps a label (e.g. ``"fedra [2,2,2,2,2,2]"``) to a method's run folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {k: json.loads((d / "summary.json").read_text()) for k, d in method_dirs.items()}
    ref = summaries.get(reference, {}).get("member_cost", {})
    domains = sorted({d for s in summaries.values() for d in s.get("domain_accuracy", {})}, key=int)
    names = [domain_names[int(d)] if domain_names else f"domain {d}" for d in domains]

    def pct(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    lines = ["| method | capacities | mean domain acc | " + " | ".join(names) + " | overall |"]
    lines.append("|---" * (4 + len(names)) + "|")
    for label, s in summaries.items():
        acc = s.get("domain_accuracy", {})
        extra = ""
        if "ensemble_accuracy" in s:
            extra = (
                f" (ensemble {pct(s['ensemble_accuracy'])}, "
                f"last head {pct(s['last_head_accuracy'])})"
            )
        lines.append(
            f"| {label} | {s.get('capacities')} | {pct(s.get('mean_domain_accuracy'))} | "
            + " | ".join(pct(acc.get(d)) for d in domains)
            + f" | {pct(s.get('test_accuracy'))}{extra} |"
        )
    members = sorted({c for s in summaries.values() for c in s.get("member_cost", {})}, key=int)
    lines += ["", "Per member (mean over rounds): blocks held / peak training memory relative to"]
    lines += [
        f"the full model / training time per round relative to {reference}'s same member.",
        "",
    ]
    lines.append("| method | " + " | ".join(f"member {c}" for c in members) + " |")
    lines.append("|---" * (1 + len(members)) + "|")
    for label, s in summaries.items():
        cells = []
        for c in members:
            m = s.get("member_cost", {}).get(c)
            if not m:
                cells.append("—")
                continue
            t = m["train_time_s"] / ref[c]["train_time_s"] if c in ref else float("nan")
            cells.append(f"{m['blocks']:.0f} / {m['peak_vs_full']:.2f} / {t:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    full = next((s["full_model_cost"] for s in summaries.values() if "full_model_cost" in s), {})
    if full:
        lines += [
            "",
            f"Full model: {full['peak_bytes'] / 2**20:.1f} MiB peak = parameters "
            f"{full['param_bytes'] / 2**20:.1f} + gradients {full['grad_bytes'] / 2**20:.2f} + "
            f"optimiser {full['optimizer_bytes'] / 2**20:.2f} + activations "
            f"{full['activation_bytes'] / 2**20:.1f} MiB.",
        ]
    lines += ["", "| method | KiB up / round | KiB down / round | KiB up per member / round |"]
    lines.append("|---|---|---|---|")
    for label, d in method_dirs.items():
        up, down, per = _per_round_bytes(d)
        span = ", ".join(f"{v / 1024:.0f}" for v in per.values())
        lines.append(f"| {label} | {up / 1024:.0f} | {down / 1024:.0f} | {span} |")
    text = "\n".join(lines) + "\n"
    (out / "fedra_report.md").write_text(text)
    plot_accuracy_rounds(method_dirs, out / "accuracy_rounds.png")
    plot_domain_accuracy(summaries, out / "domain_accuracy.png", domain_names)
    plot_member_cost(summaries, out / "member_cost.png")
    return text


def write_fedra_report(run_dir: str | Path) -> str:
    """:func:`fedra_report` over the FedRA-family methods a run folder holds."""
    run_dir = Path(run_dir)
    dirs = {n: run_dir / n for n in FEDRA_METHODS if (run_dir / n / "summary.json").exists()}
    reference = "all_large" if "all_large" in dirs else next(iter(dirs), "all_large")
    return fedra_report(dirs, run_dir, reference=reference) if dirs else ""
