"""DMTRL and its references from an experiment file: run folder, report, errors, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consortium.cli import main
from consortium.report.mtl import write_mtl_report

SMALL = """
name = "mtl-small"
seed = 0
methods = ["dmtrl", "mtrl_centralised", "single_task", "global_model"]

[data]
dataset = "mtl_synthetic"

[data.options]
clusters = [3, 2]
negated = [1, 0]
unrelated = 1
dim = 6
train_min = 10
train_max = 20
test_samples = 30

[federation]
rounds = {rounds}

[dmtrl]
lambda_grid = [0.01, 0.1]
omega_floor = 0.3
gap_tolerance = 1e-10
omega_tolerance = 1e-9

[mtrl_centralised]
lambda_grid = [0.01, 0.1]
omega_floor = 0.3

[single_task]
lambda_grid = [0.01, 0.1]

[global_model]
lambda_grid = [0.01, 0.1]
"""


def write(tmp_path, rounds=400, extra=""):
    path = tmp_path / "exp.toml"
    path.write_text(SMALL.format(rounds=rounds) + extra)
    return path


def test_a_toml_file_runs_every_method_and_the_report_draws_the_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    s = {m: json.loads((out / m / "summary.json").read_text()) for m in ("dmtrl", "single_task")}
    central = json.loads((out / "mtrl_centralised" / "summary.json").read_text())
    # Same λ2 by validation, same optimum, same scores.
    assert s["dmtrl"]["lambda2"] == central["lambda2"] and s["dmtrl"]["lambda2_by_validation"]
    assert s["dmtrl"]["objective"] == pytest.approx(central["objective"], rel=1e-8)
    assert s["dmtrl"]["mean_rmse"] == pytest.approx(central["mean_rmse"], rel=1e-5)
    assert len(s["dmtrl"]["client_rmse"]) == 7 and s["single_task"]["mean_rmse"] > 0
    rows = [json.loads(x) for x in (out / "dmtrl" / "metrics.jsonl").read_text().splitlines()]
    assert all("duality_gap" in r for r in rows if r.get("replies"))
    # `consortium run` drew the family's report itself ...
    for name in ("convergence.png", "bytes.png", "task_correlation.png"):
        assert (out / "dmtrl" / name).exists(), name
    assert (out / "task_scores.png").exists() and (out / "mtl_summary.md").exists()
    assert "mean RMSE" in (out / "summary.md").read_text()  # the generic table shows RMSE too
    # ... and it can be redrawn from the folder
    written = {p.name for p in write_mtl_report(out)}
    assert {"convergence.png", "bytes.png", "task_correlation.png"} <= written
    assert {"task_scores.png", "mtl_summary.md"} <= written
    assert (out / "dmtrl" / "task_correlation.png").stat().st_size > 1000
    assert "mean RMSE" in (out / "mtl_summary.md").read_text()


class Crash(Exception):
    pass


def test_resume_from_a_checkpoint_gives_the_same_model(tmp_path, monkeypatch):
    import consortium.experiment.execution as runner

    path = write(tmp_path, rounds=60)
    only = ["--set", 'methods=["dmtrl"]', "--no-progress"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", str(path), "--out", str(full), *only]) == 0

    real = runner.run_workflow

    def crash_at_round_25(*args, **kwargs):
        def stop(rnd, _):
            if rnd == 25:
                raise Crash

        return real(*args, **{**kwargs, "callbacks": [*kwargs.get("callbacks", ()), stop]})

    monkeypatch.setattr(runner, "run_workflow", crash_at_round_25)
    # the command line turns the crash into one line and exit status 1; the run is kept
    assert main(["run", str(path), "--out", str(cut), *only]) == 1
    monkeypatch.setattr(runner, "run_workflow", real)
    assert main(["run", str(path), "--out", str(cut), "--resume", *only]) == 0
    a, b = np.load(full / "dmtrl" / "model.npz"), np.load(cut / "dmtrl" / "model.npz")
    assert np.array_equal(a["W"], b["W"]) and np.array_equal(a["Omega"], b["Omega"])
    rounds = (cut / "dmtrl" / "metrics.jsonl").read_text().splitlines()
    assert len(rounds) == 60


@pytest.mark.parametrize(
    "override, message",
    [
        ("dmtrl.sigma=-1", "dmtrl.sigma: must be > 0"),
        ("dmtrl.aggregation=sum", "dmtrl.aggregation"),
        ("dmtrl.lambda2=0", "dmtrl.lambda2"),
        ("dmtrl.omega_floor=1.5", "dmtrl.omega_floor"),
        ("dmtrl.typo=1", "unknown key"),
        ("data.options.rho=2", "data.options.rho"),
        ("data.options.colour=1", "unknown key"),
        ('data = {dataset = "digits"}', "one task per member"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path)), "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (out / "dmtrl").exists()  # nothing ran


def test_the_floor_is_chosen_by_validation_with_lambda2_when_unset(tmp_path):
    text = SMALL.format(rounds=600).replace("omega_floor = 0.3\n", "floor_grid = [1e-4, 0.3]\n")
    path = tmp_path / "exp.toml"
    path.write_text(text)
    out = tmp_path / "run"
    only = ["--set", 'methods=["dmtrl", "mtrl_centralised"]', "--no-progress"]
    assert main(["run", str(path), "--out", str(out), *only]) == 0
    s = {
        m: json.loads((out / m / "summary.json").read_text()) for m in ("dmtrl", "mtrl_centralised")
    }
    d, c = s["dmtrl"], s["mtrl_centralised"]
    assert d["omega_floor_by_validation"] and d["lambda2_by_validation"]
    # Every (λ2, floor) pair was scored; the chosen one is the best, shared by both methods.
    scores = d["validation_scores"]
    assert len(scores) == 4 and {k.split()[1] for k in scores} == {"floor=0.0001", "floor=0.3"}
    chosen = f"lambda2={d['lambda2']:g} floor={d['omega_floor']:g}"
    assert scores[chosen] == min(scores.values())
    assert (c["lambda2"], c["omega_floor"]) == (d["lambda2"], d["omega_floor"])
    # Both solve the same problem: DMTRL (not finished in 600 rounds here) is above the
    # centralised optimum by no more than its own certificate says.
    assert 0 <= d["objective"] - c["objective"] <= d["joint_gap"] * d["objective"]
    assert c["joint_gap"] <= 1e-6
