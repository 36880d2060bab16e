"""The run folder rules as a user meets them on the command line: a run name cannot point
at another folder, --overwrite and the demo delete only consortium's own run folders, and a
folder in use by a live run is not resumed or overwritten."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consortium.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")

QUICK = """
name = "quick"
methods = ["fedavg"]
output_dir = "{output_dir}"
[data]
dataset = "digits"
num_clients = 3
max_samples = 300
[model]
name = "mlp"
options = {{hidden = [16]}}
[federation]
rounds = 1
"""


@pytest.fixture
def runs(tmp_path):
    """An output folder that already holds other people's runs and files."""
    out = tmp_path / "runs"
    (out / "someone-elses-run").mkdir(parents=True)
    (out / "someone-elses-run" / "model.npz").write_bytes(b"precious")
    (out / "notes.txt").write_text("keep me")
    exp = tmp_path / "exp.toml"
    exp.write_text(QUICK.format(output_dir=out))
    return exp, out


def intact(out: Path) -> bool:
    return (out / "someone-elses-run" / "model.npz").read_bytes() == b"precious" and (
        out / "notes.txt"
    ).read_text() == "keep me"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", [".", "..", "a/b", "../runs"])
def test_a_run_name_cannot_name_another_folder(runs, capsys, name):
    exp, out = runs
    args = ["run", str(exp), "--overwrite", "--no-progress", "--set", f'name="{name}"']
    assert main(args) == 2
    assert "name" in one_line_error(capsys)
    assert intact(out)


def test_overwrite_and_the_demo_refuse_folders_consortium_did_not_create(runs, capsys):
    exp, out = runs
    assert main(["run", str(exp), "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert "not created by consortium" in one_line_error(capsys)
    assert main(["demo", "--out", str(out), "--no-progress"]) == 2  # the demo always overwrites
    assert "not created by consortium" in one_line_error(capsys)
    assert intact(out)


def test_overwrite_replaces_a_run_folder_of_its_own(runs, capsys):
    exp, out = runs
    assert main(["run", str(exp), "--no-progress"]) == 0
    run = out / "quick"
    (run / "stale.txt").write_text("from before")
    assert main(["run", str(exp), "--no-progress"]) == 2  # not silently
    assert "--resume or --overwrite" in one_line_error(capsys)
    assert main(["run", str(exp), "--overwrite", "--no-progress"]) == 0
    assert not (run / "stale.txt").exists() and (run / "fedavg" / "model.npz").exists()
    assert intact(out)


def test_a_folder_in_use_is_neither_resumed_nor_overwritten(runs, capsys):
    exp, out = runs
    assert main(["run", str(exp), "--no-progress"]) == 0
    run = out / "quick"
    code = (
        "import sys, time\n"
        "from consortium.core.rundir import lock_run_dir\n"
        "h = lock_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(600)\n"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", code, str(run / "fedavg")],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "held"
        for flag in ("--resume", "--overwrite"):
            assert main(["run", str(exp), flag, "--no-progress"]) == 2
            assert "in use by a live run" in one_line_error(capsys)
        assert (run / "fedavg" / "model.npz").exists()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    assert main(["run", str(exp), "--resume", "--no-progress"]) == 0
