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


# --- many seeds: mean ± std tables of a grid of runs ------------------------------------------


def _cell_of(run_dir: Path) -> tuple[tuple[str, str, str], int, dict[str, Any]]:
    """((backbone, skew, capacities), seed, config) of a run folder of the FedRA family."""
    cfg = json.loads((run_dir / "config.json").read_text())
    section = next(cfg[m] for m in FEDRA_METHODS if m in cfg)
    skew = cfg["data"].get("options", {}).get("skew", "feature")
    caps = str(section["capacities"]).replace(" ", "")
    return (str(section.get("backbone", "")), skew, caps), int(cfg["seed"]), cfg


def _min_cap(caps: str) -> int:
    return min(int(c) for c in caps.strip("[]").split(","))


def _ms(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "—"
    v = np.asarray(values, float) * scale
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def seed_table(run_dirs: list[Path], domain_names: list[str] | None = None) -> str:
    """Markdown tables of a grid of runs (one folder per backbone, skew, capacities and seed):
    accuracy per domain and over domains as mean ± std over seeds; FedRA against each baseline
    (paired by seed: mean difference, and a paired t-test); per-member peak memory relative to
    the full model and training time relative to ALL-large's same member; bytes per round."""
    from scipy import stats

    cells: dict[tuple[str, str, str], dict[int, Path]] = {}
    for d in run_dirs:
        key, seed, _ = _cell_of(d)
        cells.setdefault(key, {})[seed] = d
    large: dict[tuple[str, str, int], dict[str, Any]] = {}
    for (backbone, skew, _), seeds in cells.items():
        for seed, d in seeds.items():
            if (d / "all_large" / "summary.json").is_file():
                large[(backbone, skew, seed)] = json.loads(
                    (d / "all_large" / "summary.json").read_text()
                )
    out: list[str] = []
    for (backbone, skew, caps), seeds in sorted(cells.items()):
        summaries: dict[str, dict[int, dict[str, Any]]] = {}
        for seed, d in sorted(seeds.items()):
            for m in FEDRA_METHODS:
                f = d / m / "summary.json"
                if f.is_file():
                    summaries.setdefault(m, {})[seed] = json.loads(f.read_text())
        if not summaries:
            continue
        # ALL-large ignores capacities and ALL-small uses their minimum: a run with the same
        # minimum (same backbone, skew, seed) stands in for them, marked with a star.
        for m in ("all_large", "all_small"):
            if m in summaries:
                continue
            for (b2, s2, c2), seeds2 in cells.items():
                if (b2, s2) != (backbone, skew) or c2 == caps or _min_cap(c2) != _min_cap(caps):
                    continue
                found = {
                    seed: json.loads((d / m / "summary.json").read_text())
                    for seed, d in seeds2.items()
                    if seed in seeds and (d / m / "summary.json").is_file()
                }
                if found:
                    summaries[f"{m}*"] = found
                    break
        domains = sorted(
            {k for per in summaries.values() for s in per.values() for k in s["domain_accuracy"]},
            key=int,
        )
        names = [domain_names[int(k)] if domain_names else k for k in domains]
        out += [
            f"### {backbone}, {skew.replace('_', ' + ')} skew, capacities {caps}",
            "",
            f"Accuracy (%) of the released model, mean ± std over seeds {sorted(seeds)}:",
            "",
            "| method | mean over domains | " + " | ".join(names) + " |",
            "|---" * (2 + len(names)) + "|",
        ]
        for m, per in summaries.items():
            row = [_ms([s["mean_domain_accuracy"] for s in per.values()])]
            row += [_ms([s["domain_accuracy"][k] for s in per.values()]) for k in domains]
            out.append(f"| {m} | " + " | ".join(row) + " |")
        if "fedra" in summaries:
            out += ["", "FedRA minus each baseline (mean over domains, paired by seed; * = the run"]
            out += [
                "with the same minimum capacity, which ALL-large and ALL-small do not see past):",
                "",
            ]
            out += ["| baseline | difference (points) | paired t-test p | beyond seed noise |"]
            out.append("|---|---|---|---|")
            for m, per in summaries.items():
                common = sorted(set(per) & set(summaries["fedra"]))
                if m == "fedra" or not common:
                    continue
                a = np.array([summaries["fedra"][s]["mean_domain_accuracy"] for s in common])
                b = np.array([per[s]["mean_domain_accuracy"] for s in common])
                p = float(stats.ttest_rel(a, b).pvalue) if len(common) > 1 else float("nan")
                verdict = "yes" if p < 0.05 else "no"
                if p < 0.05:
                    verdict += " (FedRA better)" if a.mean() > b.mean() else " (FedRA worse)"
                out.append(f"| {m} | {_ms(list(a - b))} | {p:.3f} | {verdict} |")
        out += ["", "Per member capacity L_k (mean over members, rounds and seeds): peak training"]
        out += ["memory / full model's, and training time per round / ALL-large's same member:", ""]
        levels = sorted(
            {
                round(c["blocks"])
                for per in summaries.values()
                for s in per.values()
                for c in s["member_cost"].values()
            },
            reverse=True,
        )
        out.append(
            "| method | " + " | ".join(f"L_k = {lv}" for lv in levels) + " | KiB up / round |"
        )
        out.append("|---" * (2 + len(levels)) + "|")
        for m, per in summaries.items():
            mem: dict[int, list[float]] = {}
            tim: dict[int, list[float]] = {}
            for seed, s in per.items():
                ref = large.get((backbone, skew, seed), {}).get("member_cost", {})
                for cid, c in s["member_cost"].items():
                    lv = round(c["blocks"])
                    mem.setdefault(lv, []).append(c["peak_vs_full"])
                    if cid in ref and ref[cid]["train_time_s"] > 0:
                        tim.setdefault(lv, []).append(c["train_time_s"] / ref[cid]["train_time_s"])
            cells_txt = [
                f"{np.mean(mem[lv]):.2f} / {np.mean(tim[lv]):.2f}"
                if lv in mem and lv in tim
                else (f"{np.mean(mem[lv]):.2f} / —" if lv in mem else "—")
                for lv in levels
            ]
            kib = [_per_round_bytes(seeds[s] / m)[0] / 1024 for s in per if (seeds[s] / m).is_dir()]
            kib_txt = f"{np.mean(kib):.0f}" if kib else "—"
            out.append(f"| {m} | " + " | ".join(cells_txt) + f" | {kib_txt} |")
        out.append("")
    return "\n".join(out) + "\n"
