"""The command line as a user meets it: config errors, a run, report, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from consortium.cli import main

QUICK = """
name = "quick"
seed = 0
methods = ["fedavg", "standalone", "centralised"]
[data]
dataset = "digits"
num_clients = 4
partition = "dirichlet"
alpha = 0.5
[model]
name = "mlp"
options = {hidden = [32]}
[federation]
rounds = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (QUICK + "\nbogus = 1\n", [], "bogus: unknown key"),
        (QUICK.replace('partition = "dirichlet"', 'partition = "weird"'), [], "data.partition"),
        (QUICK, ["federation.rounds=0"], "federation.rounds"),
        (QUICK, ["federation.clients_per_round=1.5"], "clients_per_round"),
        (QUICK, ['methods=["nope"]'], "unknown method 'nope'"),
        (QUICK, ["fedprox.prox_mu=-1"], "fedprox.prox_mu"),
        (QUICK, ["fedavg.unknown=1"], "fedavg.unknown: unknown key"),
        (QUICK, ["data.dataset=nothing"], "nothing"),
        (QUICK, ["model.name=resnet999"], "unknown model"),
        ("name = [", [], "not valid TOML"),
    ],
)
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, text, overrides, expected):
    args = ["run", str(write(tmp_path, text)), "--out", str(tmp_path / "run"), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    args = [
        "run",
        str(write(tmp_path, QUICK)),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "data.dataset=fashion_mnist",
        "--set",
        f"data.path={tmp_path / 'none'}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install dataset-fashion-mnist" in err and len(err.splitlines()) == 1


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_run_writes_the_run_folder_and_report_reads_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, QUICK)), "--out", str(out), "--no-progress"]) == 0
    for name in [
        "config.toml",
        "config.json",
        "partition.txt",
        "summary.md",
        "summary.json",
        "accuracy.png",
        "client_accuracy.png",
    ]:
        assert (out / name).exists(), name
    for method in ["fedavg", "standalone", "centralised"]:
        assert (out / method / "summary.json").exists()
    lines = (out / "fedavg" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["round"] == 3
    assert "fedavg" in capsys.readouterr().out
    # the resolved config is itself a valid experiment
    assert (
        main(["run", str(out / "config.toml"), "--out", str(tmp_path / "again"), "--no-progress"])
        == 0
    )
    a = np.load(out / "fedavg" / "model.npz")
    b = np.load(tmp_path / "again" / "fedavg" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert main(["report", str(out)]) == 0
    assert "standalone" in capsys.readouterr().out
    # an existing run folder is not silently overwritten
    assert main(["run", str(write(tmp_path, QUICK)), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_report_on_missing_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_model(tmp_path):
    """SIGKILL a real run mid-way, resume it, compare with an uninterrupted run."""
    exp = write(
        tmp_path,
        QUICK.replace("rounds = 3", "rounds = 40").replace(
            'methods = ["fedavg", "standalone", "centralised"]', 'methods = ["fedavg"]'
        ),
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "consortium.cli", "run", str(exp), "--no-progress"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run([*cmd, "--out", str(full)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        [*cmd, "--out", str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = cut / "fedavg" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "fedavg" / "summary.json").exists(), "run finished before it was killed"
    subprocess.run([*cmd, "--out", str(cut), "--resume"], check=True, env=env, capture_output=True)
    a = np.load(full / "fedavg" / "model.npz")
    b = np.load(cut / "fedavg" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    rounds = [
        json.loads(x)["round"] for x in (cut / "fedavg" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rounds == list(range(1, 41))
