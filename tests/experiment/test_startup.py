"""What a run pays before its first round and after its last: only the imports it uses, the
result before the plots, and no interpreter teardown."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from consortium.experiment.runner import in_background

#: Heavy modules no FedAvg run needs (scikit-learn, with scipy and pandas, builds its data).
UNUSED = ["matplotlib", "transformers", "peft", "ray", "sympy", "torch._dynamo"]


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )


def test_the_flower_member_module_imports_only_what_a_member_uses():
    pytest.importorskip("flwr")
    out = python(
        f"""
        import sys
        import consortium.experiment.flower
        heavy = {[*UNUSED, "sklearn", "scipy", "pandas"]} + [
            "consortium.experiment.runner", "consortium.report",
            "consortium.runtime.flower.loopback", "consortium.runtime.flower.simulation",
        ]
        print([m for m in heavy if m in sys.modules])
        """
    )
    assert out.stdout.strip() == "[]"


EXPERIMENT = """
name = "startup"
methods = ["fedavg", "standalone"]
[data]
dataset = "digits"
num_clients = 3
max_samples = 300
[train]
epochs = 1
[federation]
rounds = 2
"""


def test_a_run_imports_no_plotting_or_compiler_and_still_draws_its_plots(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text(EXPERIMENT)
    out = python(
        f"""
        import io, sys
        from rich.console import Console
        from consortium.experiment import load_experiment, run_experiment
        run_experiment(load_experiment(sys.argv[1]), sys.argv[2], progress=False,
                       console=Console(file=io.StringIO()))
        print([m for m in {UNUSED} if m in sys.modules])
        """,
        str(exp),
        str(tmp_path / "run"),
    )
    assert out.stdout.strip() == "[]"
    for name in ("accuracy.png", "client_accuracy.png"):  # drawn by another process
        assert (tmp_path / "run" / name).stat().st_size > 1000


def test_the_command_exits_at_once_with_its_output_flushed(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text(EXPERIMENT)
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "consortium", "run", str(exp), "--out", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"run folder: {run}")
    assert "fedavg" in done.stdout
    assert json.loads((run / "fedavg" / "summary.json").read_text())["workers"] >= 1
    bad = subprocess.run(
        [sys.executable, "-m", "consortium", "run", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"consortium: error: {tmp_path / 'missing.toml'}: no such experiment file"
    ]


def test_drawing_in_the_background_runs_beside_the_block_and_reports_its_errors(tmp_path):
    marker = tmp_path / "drawn"

    def draw():
        time.sleep(0.5)
        marker.write_text("yes")

    start = time.monotonic()
    with in_background(draw):
        assert not marker.exists()  # the block did not wait for the drawing
    assert marker.read_text() == "yes"  # ... but the end of the block did
    assert time.monotonic() - start >= 0.5

    def broken():
        raise ValueError("no such column")

    failed = "drawing the report failed: ValueError: no such column"
    with pytest.raises(RuntimeError, match=failed), in_background(broken):
        pass
