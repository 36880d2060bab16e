"""The shared plot style: a stable look per method, whole-number rounds, titles, labels that
do not overlap, and curves that stay visible when they coincide."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from consortium.report import plots, style
from consortium.report.mtl import plot_bytes

FAMILIES = [
    ["fedavg", "standalone", "centralised", "fedprox", "scaffold"],
    ["fedavg", "standalone", "aequa", "aequa_training_time", "cgsv", "iafl"],
    ["fedra", "all_large", "all_small", "inclusivefl", "depthfl"],
    ["dmtrl", "mtrl_centralised", "single_task", "global_model"],
    ["original", "selective", "selective_server", "retrain", "finetune", "gradient_ascent",
     "tfidf_prune"],
]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_methods_that_share_a_plot_never_share_a_look(family):
    looks = [style.method_style(m) for m in family]
    assert len({s.color for s in looks}) == len(family), family
    assert len({(s.marker, s.linestyle) for s in looks}) == len(family), family


def test_a_methods_style_is_the_same_everywhere_and_for_unknown_names_too():
    assert style.method_style("aequa") == style.method_style("aequa")
    assert style.method_style("fedra [2,2,2]") == style.method_style("fedra")
    mine = style.method_style("my_method")
    assert mine == style.method_style("my_method") and mine.color in style.PALETTE


def test_round_axes_have_whole_number_ticks():
    fig, ax = plt.subplots()
    style.plot_curve(ax, "fedavg", [1, 2, 3], [0.1, 0.5, 0.7])
    style.round_axis(ax)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_coinciding_curves_both_show():
    fig, ax = plt.subplots()
    (a,) = style.plot_curve(ax, "aequa", [1, 2, 3], [0.2, 0.4, 0.6], order=0)
    (b,) = style.plot_curve(ax, "aequa_training_time", [1, 2, 3], [0.2, 0.4, 0.6], order=1)
    assert a.get_linewidth() > b.get_linewidth()  # the one below shows at the edges
    assert a.get_zorder() < b.get_zorder()
    assert (a.get_color(), a.get_linestyle(), a.get_marker()) != (
        b.get_color(), b.get_linestyle(), b.get_marker())  # fmt: skip
    plt.close(fig)


def test_labels_of_crowded_points_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [0.50, 0.51, 0.52, 0.50, 0.51, 0.9]
    ys = [0.70, 0.70, 0.71, 0.71, 0.69, 0.2]
    ax.scatter(xs, ys)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    texts = style.label_points(ax, xs, ys, [f"member {i}" for i in range(len(xs))])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i, j)
    plt.close(fig)


def test_points_on_the_same_spot_share_one_label():
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [0.1, 0.1, 0.1, 0.1, 0.133], [0.440, 0.4385, 0.437, 0.433, 0.442]
    ax.set_xlim(0.08, 0.45)
    ax.set_ylim(0.2, 0.6)
    texts = style.label_points(ax, xs, ys, [f"member {i}" for i in (3, 4, 2, 9, 1)])
    shown = sorted(t.get_text() for t in texts)
    assert "members 3, 4, 2" in shown and "member 1" in shown and len(shown) == 3
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(3) for j in range(i + 1, 3))
    plt.close(fig)


def test_the_accuracy_plot_uses_the_shared_style(tmp_path, monkeypatch):
    for name, accs in {"fedavg": [0.2, 0.5, 0.6], "fedprox": [0.2, 0.5, 0.6]}.items():
        (tmp_path / name).mkdir()
        lines = [{"round": r, "test_accuracy": a} for r, a in enumerate(accs, 1)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    (tmp_path / "standalone").mkdir()
    shown = {}
    monkeypatch.setattr(plots, "finish", lambda fig, out: shown.setdefault("fig", fig) and out)
    dirs = [tmp_path / "fedavg", tmp_path / "fedprox", tmp_path / "standalone"]
    plots.plot_accuracy_per_round(dirs, {"standalone": {"test_accuracy": 0.4}}, tmp_path / "a.png")
    ax = shown["fig"].axes[0]
    assert tmp_path.name in ax.get_title() and "accuracy" in ax.get_title()
    colors = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert colors["fedavg"] == style.method_style("fedavg").color
    assert colors["standalone (final)"] == style.method_style("standalone").color
    plt.close(shown["fig"])


def test_a_method_with_one_exchange_gets_no_empty_bytes_plot(tmp_path):
    one = [{"round": 1, "bytes_up": 100, "bytes_down": 100}]
    assert plot_bytes(one, tmp_path / "bytes.png") is None
    two = [*one, {"round": 2, "bytes_up": 50, "bytes_down": 100}]
    assert plot_bytes(two, tmp_path / "bytes.png") == tmp_path / "bytes.png"
    assert np.asarray(plt.imread(tmp_path / "bytes.png")).shape[0] > 100


def test_a_member_at_zero_accuracy_is_marked_and_a_missing_one_is_not(tmp_path, monkeypatch):
    shown = {}
    monkeypatch.setattr(plots, "finish", lambda fig, out: shown.setdefault("fig", fig) and out)
    summaries = {"fedavg": {"client_accuracy": {"0": 0.0, "1": 0.5, "2": 0.0}},
                 "standalone": {"client_accuracy": {"1": 0.25}}}  # fmt: skip
    plots.plot_client_accuracy(summaries, tmp_path / "c.png")
    ax = shown["fig"].axes[0]
    zeros = [t for t in ax.texts if t.get_text() == "0"]
    assert len(zeros) == 2  # fedavg's members 0 and 2; standalone's missing 0 and 2 unmarked
    assert {t.get_color() for t in zeros} == {style.method_style("fedavg").color}
    assert tmp_path.name in ax.get_title()
    plt.close(shown["fig"])
