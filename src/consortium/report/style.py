"""One look for every plot consortium draws.

A reader compares plots side by side (``accuracy.png`` of one run against another, Aequa's
curve against FedAvg's), so a method keeps its colour, marker and line style in every plot of
every run; round axes have whole-number ticks; every figure has a title; curves that coincide
(a variant equal to its base, DMTRL at its centralised optimum) stay visible because each
method draws with its own dash and marker, and earlier curves are drawn wider under later
ones; member labels next to points are moved apart until none overlaps another.

Plot modules call :func:`method_style` (or :func:`plot_curve`), :func:`round_axis`,
:func:`finish` and :func:`label_points`; nothing else needs to know the palette.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

#: The palette (matplotlib's tab10, then the light tab20 shades for names beyond it).
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DASHES = ("-", "--", "-.", ":")

#: Built-in methods: (palette index, marker index, dash index). Methods that share a plot
#: (one family, plus FedAvg and the references) never share a colour.
KNOWN: dict[str, tuple[int, int, int]] = {
    # references and the averaging family
    **dict(fedavg=(0, 0, 0), standalone=(7, 1, 1), centralised=(2, 2, 2), fedprox=(1, 3, 0),
           scaffold=(4, 4, 0)),
    # fair rewards
    **dict(aequa=(3, 6, 0), aequa_training_time=(5, 5, 1), cgsv=(6, 3, 2), iafl=(8, 4, 3)),
    # heterogeneous members
    **dict(fedra=(3, 0, 0), all_large=(0, 1, 1), all_small=(1, 2, 2), inclusivefl=(4, 3, 3),
           depthfl=(2, 4, 1)),
    # multi-task
    **dict(dmtrl=(3, 0, 0), mtrl_centralised=(0, 1, 1), single_task=(7, 2, 2),
           global_model=(1, 3, 3)),
    # unlearning
    **dict(original=(7, 0, 1), selective=(3, 1, 0), selective_server=(5, 2, 0), retrain=(2, 3, 2),
           finetune=(0, 4, 3), gradient_ascent=(1, 5, 1), tfidf_prune=(4, 6, 2)),
}  # fmt: skip

DPI = 120


class Style(NamedTuple):
    """How one method is drawn in every plot."""

    color: str
    marker: str
    linestyle: str


def method_style(name: str) -> Style:
    """The stable style of ``name``; a method we do not know gets one derived from its name
    (the same in every plot and every run), and a label like ``"fedra [2,2]"`` that of its
    first word."""
    key = name.split()[0] if name.split() else name
    if key in KNOWN:
        c, m, d = KNOWN[key]
    else:
        h = zlib.crc32(key.encode())
        c, m, d = h % len(PALETTE), (h // 7) % len(MARKERS), (h // 11) % len(DASHES)
    return Style(PALETTE[c], MARKERS[m], DASHES[d])


def plot_curve(ax: Any, name: str, xs: Sequence[float], ys: Sequence[float], order: int = 0,
               **kwargs: Any) -> Any:  # fmt: skip
    """One method's curve in its style. ``order`` is its position among the plot's curves:
    earlier ones are drawn wider, so a later curve lying exactly on top leaves its
    predecessor visible at both edges; markers are thinned on long curves."""
    style = method_style(name)
    every = max(1, len(xs) // 15)
    options = {
        "color": style.color,
        "linestyle": style.linestyle,
        "marker": style.marker,
        "markersize": 5,
        "markevery": (order % every, every),
        "markerfacecolor": "none" if order % 2 else style.color,
        "linewidth": max(1.2, 3.2 - 0.6 * order),
        "label": name,
        "zorder": 2 + order,
        **kwargs,
    }
    return ax.plot(xs, ys, **options)


def round_axis(ax: Any, label: str = "round") -> None:
    """Whole-number ticks on a round axis (matplotlib would print 1.5 between rounds)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)


def title(ax: Any, text: str, run: str | None = None) -> None:
    """The figure's title: what it shows, and the run it comes from when known."""
    ax.set_title(f"{text} — {run}" if run else text, fontsize=11)


def legend(ax: Any, entries: int | None = None) -> None:
    """A legend inside the axes for a few entries, beside them for many."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    n = len(labels) if entries is None else entries
    if n <= 5:
        ax.legend(fontsize=8, framealpha=0.85)
    else:
        ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left", borderaxespad=0)


def finish(fig: Any, out: Path) -> Path:
    """Lay out, save and close a figure (plots never stay open in a long run)."""
    fig.tight_layout()
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


#: Where a label may go, in points from its point: right, above, left, below, diagonals,
#: then two rings further out.
_OFFSETS = [(4, 3), (4, -10), (-4, 3), (-4, -10), (0, 8), (0, -14), (8, 8), (8, -14),
            (-8, 8), (-8, -14), (14, 0), (-14, 0), (0, 16), (0, -22)]  # fmt: skip
_OFFSETS += [(round(r * np.cos(a)), round(r * np.sin(a)))
             for r in (26, 40) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]  # fmt: skip
#: Points closer than this (pixels) share one label ("members 2, 3, 4").
_SAME_PLACE = 4.0


def _merge_coinciding(
    points: list[Any], xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]
) -> list[tuple[float, float, str]]:
    """One label per place: points that coincide on the page are labelled together."""
    groups: list[list[int]] = []
    for i, p in enumerate(points):
        for group in groups:
            q = points[group[0]]
            if abs(p[0] - q[0]) <= _SAME_PLACE and abs(p[1] - q[1]) <= _SAME_PLACE:
                group.append(i)
                break
        else:
            groups.append([i])
    out = []
    for group in groups:
        names = [labels[i] for i in group]
        if len(names) > 1 and all(n.startswith("member ") for n in names):
            text = "members " + ", ".join(n.removeprefix("member ") for n in names)
        else:
            text = ", ".join(names)
        out.append((xs[group[0]], ys[group[0]], text))
    return out


def label_points(
    ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: int = 7
) -> list[Any]:
    """Label each point with its text, each at the first nearby place where it overlaps
    no label placed before it and no point (else the least crowded place), with a thin
    line back to its point when it had to move away. Points on the same spot share one
    label (``members 2, 3, 4``). Call it when the axes are otherwise complete (limits,
    titles, axis labels): the places are found for the final layout."""
    fig = ax.figure
    fig.tight_layout()  # what finish() will do: the points' final positions
    fig.canvas.draw()  # also brings the axes limits up to date
    renderer = fig.canvas.get_renderer()
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    placed: list[Any] = []
    texts = []
    for x, y, text in _merge_coinciding(points, xs, ys, labels):
        best, best_cost, best_offset = None, float("inf"), (0, 0)
        for dx, dy in _OFFSETS:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              fontsize=fontsize, ha="left" if dx >= 0 else "right")  # fmt: skip
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            cost = 100.0 * sum(_overlap(box, other) for other in placed)
            cost += sum(1.0 for px, py in points if box.contains(px, py))
            cost += 0.01 * (abs(dx) + abs(dy))  # nearer is better, all else equal
            inside = ax.bbox
            if box.x0 < inside.x0 or box.x1 > inside.x1 or box.y0 < inside.y0 or box.y1 > inside.y1:
                cost += 50.0  # sticking out of the axes: cut off, or over the tick labels
            if cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_cost, best_offset = ann, cost, (dx, dy)
            else:
                ann.remove()
            if cost < 1:  # no overlap: the nearest such place wins
                break
        assert best is not None
        if abs(best_offset[0]) + abs(best_offset[1]) > 16:
            best.remove()
            best = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=best_offset,
                fontsize=fontsize, ha="left" if best_offset[0] >= 0 else "right",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"},
            )  # fmt: skip
        best.set_in_layout(False)  # the layout must not move the points it was placed for
        placed.append(best.get_window_extent(renderer).expanded(1.05, 1.1))
        texts.append(best)
    return texts
