"""Long set-up phases say how they are getting on: on the command line as lines of their own
(even with --no-progress, even when nothing is a terminal), elsewhere in the
``consortium.progress`` log."""

from __future__ import annotations

import logging
import re

import numpy as np

from consortium.algorithms.mtl.selection import select_lambda
from consortium.algorithms.registry import MethodContext
from consortium.cli import main
from consortium.data.multitask import synthetic_tasks

DMTRL = """
name = "mtl-progress"
seed = 0
methods = ["dmtrl"]
[data]
dataset = "mtl_synthetic"
[data.options]
clusters = [2]
negated = [0]
unrelated = 0
dim = 4
train_min = 10
train_max = 12
test_samples = 10
[federation]
rounds = 2
[dmtrl]
lambda_grid = [0.01, 0.1, 1.0]
"""


def test_lambda_selection_is_shown_on_the_command_line(tmp_path, capsys):
    exp = tmp_path / "exp.toml"
    exp.write_text(DMTRL)
    assert main(["run", str(exp), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    lines = re.findall(r"choosing λ by validation: λ = (\S+?),? .*?\((\d+) of (\d+),", out)
    assert {lam for lam, _, _ in lines} == {"0.01", "0.1", "1"}  # every λ of the grid
    total = int(lines[0][2])
    assert [int(i) for _, i, _ in lines] == list(range(1, total + 1))  # each fit, in order
    # before the run's rounds: the lines come first, then the table of the finished run
    assert out.index(f"({total} of {total},") < out.index("dmtrl")


def test_the_selection_tells_say_before_each_fit():
    data = synthetic_tasks(clusters=[2], negated=[0], unrelated=0, dim=4, test_samples=10)
    heard: list[str] = []
    fits: list[float] = []

    def fit(part, lam):
        assert len(heard) == len(fits) + 1  # told before the fit starts, not after
        fits.append(lam)
        return np.zeros((part.dim, part.num_tasks))

    select_lambda(data, fit, [0.5, 2.0], 0.25, 0, say=heard.append)
    assert fits == [0.5, 2.0] and len(heard) == 2
    assert heard[1].startswith("choosing λ by validation: λ = 2 (2 of 2, ")


def test_a_method_context_without_a_listener_logs_progress(caplog):
    ctx = MethodContext(data=None, model_fn=lambda: None)
    with caplog.at_level(logging.INFO, logger="consortium.progress"):
        ctx.say("half-way through something long")
    assert [r.getMessage() for r in caplog.records] == ["half-way through something long"]
    assert caplog.records[0].name == "consortium.progress"
