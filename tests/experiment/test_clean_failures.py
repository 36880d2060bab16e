"""Runs that tell the truth and fail cleanly, as a user meets them on the command line:
a run never loses finished training, a run without a successful round exits non-zero, a
failed run leaves no folder in the way of the corrected one, file errors and member errors
are one line each and named for what they are."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from consortium.cli import main
from consortium.models import register_model

QUICK = """
name = "quick"
seed = {seed}
methods = ["fedavg"]
[data]
dataset = "digits"
num_clients = 4
max_samples = 300
[model]
name = "mlp"
options = {{hidden = [16]}}
[federation]
rounds = 3
"""


def write(tmp_path: Path, seed: int = 0, extra: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(QUICK.format(seed=seed) + extra)
    return path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def one_line(err: str) -> str:
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("consortium: error: ")
    return err


DROPOUTS = "\n".join(["failure_rate = 0.75", "min_replies = 2"])


def test_a_final_phase_without_replies_keeps_the_model_and_resume_finishes(tmp_path, capsys):
    # Seed 2: the rounds train, then every try of the final evaluation falls short (the
    # crash after all training of the issue).
    exp, run = write(tmp_path, seed=2, extra=DROPOUTS), tmp_path / "run"
    code, out, err = cli(capsys, "run", exp, "--out", run)
    assert code == 1
    msg = one_line(err)
    assert "fedavg stopped: final phase: round 4:" in msg and "(3 tries)" in msg
    assert "the trained model is kept" in msg and f"run folder {run}" in msg
    assert "simulated dropout" in msg
    method = run / "fedavg"
    assert (method / "model.npz").exists() and (method / "checkpoint.npz").exists()
    stopped = json.loads((method / "stopped.json").read_text())
    assert stopped["status"] == "stopped" and not (method / "summary.json").exists()
    table = (run / "summary.md").read_text()
    assert "| status |" in table and "stopped" in table and "* fedavg stopped: final phase" in table
    assert "fedavg stopped" in out  # printed with the table, not only with -v
    with np.load(method / "model.npz") as kept:
        trained = {k: kept[k].copy() for k in kept.files}
    # --resume tries the final phase again, with fresh draws, and keeps the trained model
    code, out, err = cli(capsys, "run", exp, "--out", run, "--resume")
    assert code == 0, err
    summary = json.loads((method / "summary.json").read_text())
    assert summary["status"] == "complete" and not (method / "stopped.json").exists()
    with np.load(method / "model.npz") as final:
        assert all(np.array_equal(final[k], v) for k, v in trained.items())


def test_a_run_whose_every_round_was_skipped_exits_non_zero(tmp_path, capsys):
    exp, run = write(tmp_path, seed=5, extra=DROPOUTS), tmp_path / "run"
    code, out, err = cli(capsys, "run", exp, "--out", run)
    assert code == 1
    msg = one_line(err)
    assert "fedavg stopped: no round succeeded: all 3 were skipped" in msg
    assert msg.endswith("nothing was trained, nothing was kept")
    # the table said it before the untrained folder went: status, skipped, failures
    header = next(line for line in out.splitlines() if line.startswith("┃ method "))
    row = next(line for line in out.splitlines() if line.startswith("│ fedavg "))
    cells = dict(
        zip(
            [c.strip() for c in header.strip("┃").split("┃")],
            [c.strip() for c in row.strip("│").split("│")],
            strict=True,
        )
    )
    assert cells["status"] == "stopped" and cells["rounds"] == cells["skipped"] == "3"
    assert int(cells["failures"]) >= 8 and cells["rejected"] == "0"
    assert not run.exists()  # nothing trained: the corrected run is not refused
    code, _, err = cli(capsys, "run", write(tmp_path, seed=5), "--out", run)
    assert code == 0, err


def test_skipped_rounds_of_a_finished_run_are_said_without_verbose(tmp_path, capsys):
    # Seed 10: some rounds are skipped, the run finishes.
    exp, run = write(tmp_path, seed=10, extra=DROPOUTS), tmp_path / "run"
    code, out, err = cli(capsys, "run", exp, "--out", run)
    assert code == 0 and err == ""
    summary = json.loads((run / "fedavg" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["client_failures"] > 0
    assert "member failures" in " ".join(out.split())
    assert "note: with failure_rate = 0.75 a round of 4 members" in " ".join(out.split())


class Exploding(torch.nn.Module):
    """A model whose forward pass fails in training: the members' code raises."""

    def __init__(self, shape, num_classes, **options):
        super().__init__()
        self.linear = torch.nn.Linear(int(np.prod(shape)), num_classes)

    def forward(self, x):
        if self.training:
            raise ValueError("boom in the member's forward pass")
        return self.linear(x.flatten(1))


register_model("exploding_for_tests", Exploding, replace=True)


def test_an_error_in_member_code_is_reported_as_the_members_not_as_a_config_error(tmp_path, capsys):
    exp = write(tmp_path, extra="")
    code, _, err = cli(
        capsys, "run", exp, "--out", tmp_path / "run", "--set", 'model.name="exploding_for_tests"'
    )
    assert code == 1, err  # not 2: the configuration was fine
    msg = one_line(err)
    assert "no round succeeded" in msg
    assert "ValueError: boom in the member's forward pass" in msg


def test_an_error_in_server_code_mid_run_is_a_run_failure_not_a_config_error(
    tmp_path, capsys, monkeypatch
):
    from consortium.algorithms.fedavg import FedAvg

    def broken(self, rnd):
        raise ValueError("server-side bug")

    monkeypatch.setattr(FedAvg, "evaluate", broken)
    code, _, err = cli(capsys, "run", write(tmp_path), "--out", tmp_path / "run")
    assert code == 1
    assert one_line(err) == (
        "consortium: error: ValueError: server-side bug "
        "(an error of the code, not of the settings; -v shows where)"
    )
    code, _, err = cli(capsys, "-v", "run", write(tmp_path), "--out", tmp_path / "run2")
    assert code == 1 and "Traceback" in err  # -v shows where


def test_errors_found_before_the_run_create_no_folder(tmp_path, capsys):
    exp, run = write(tmp_path), tmp_path / "run"
    for override in ('device="cuda:7"', 'device="gpu"', "federation.min_replies=5"):
        code, _, err = cli(capsys, "run", exp, "--out", run, "--set", override)
        assert code == 2, (override, err)
        one_line(err)
        assert not run.exists(), override


def test_a_late_error_leaves_no_folder_and_the_corrected_run_goes_through(tmp_path, capsys):
    """A configuration error only the method's builder finds (after the folder was made)."""
    import dataclasses

    from consortium.algorithms.registry import get_method, register_method
    from consortium.config import ConfigError

    def late(ctx, options):
        raise ConfigError("fedavg.something: found late")

    exp, run = write(tmp_path), tmp_path / "out" / "run"
    real = get_method("fedavg")
    register_method(dataclasses.replace(real, build=late), replace=True)
    try:
        code, _, err = cli(capsys, "run", exp, "--out", run)
    finally:
        register_method(real, replace=True)
    assert code == 2 and "found late" in one_line(err)
    assert not run.exists() and (tmp_path / "out").exists()  # only what the run made is gone
    code, _, err = cli(capsys, "run", exp, "--out", run)
    assert code == 0, err  # not "already holds a run"


def test_a_run_that_trained_keeps_its_folder_when_it_fails(tmp_path, capsys, monkeypatch):
    from consortium.algorithms.fedavg import FedAvg

    real = FedAvg.finish

    def crash(self, grid):
        raise RuntimeError("lost the server")

    monkeypatch.setattr(FedAvg, "finish", crash)
    exp, run = write(tmp_path), tmp_path / "run"
    code, _, err = cli(capsys, "run", exp, "--out", run)
    assert code == 1 and "lost the server" in one_line(err)
    assert (run / "fedavg" / "checkpoint.npz").exists()  # three trained rounds are kept
    monkeypatch.setattr(FedAvg, "finish", real)
    code, _, err = cli(capsys, "run", exp, "--out", run, "--resume")
    assert code == 0, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_with_the_path(tmp_path, capsys):
    exp, run = write(tmp_path), tmp_path / "run"
    assert cli(capsys, "run", exp, "--out", run)[0] == 0
    model = run / "fedavg" / "model.npz"
    # the next run of the method writes its model onto a full device (a real ENOSPC)
    for name in ("checkpoint.npz", "summary.json", "model.npz"):
        (run / "fedavg" / name).unlink()
    model.symlink_to("/dev/full")
    code, _, err = cli(capsys, "run", exp, "--out", run, "--resume")
    assert code == 1
    assert one_line(err) == f"consortium: error: {model}: No space left on device"


def test_a_read_only_output_folder_is_one_line_with_the_path(tmp_path, capsys, monkeypatch):
    run = tmp_path / "readonly" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "readonly")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, _, err = cli(capsys, "run", write(tmp_path), "--out", run)
    assert code == 1
    assert one_line(err) == f"consortium: error: {run}: Read-only file system"


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_data(tmp_path, capsys):
    """Found by the checks (and by --check), not when the run makes its folder."""
    (tmp_path / "taken").write_text("a file, not a folder")
    run = tmp_path / "taken" / "run"
    for extra in ((), ("--check",)):
        code, out, err = cli(capsys, "run", write(tmp_path), "--out", run, *extra)
        assert code == 1 and out == ""
        assert one_line(err) == f"consortium: error: {tmp_path / 'taken'}: Not a directory"


def test_an_unreadable_checkpoint_is_one_line_with_the_path(tmp_path, capsys, monkeypatch):
    exp, run = write(tmp_path), tmp_path / "run"
    assert cli(capsys, "run", exp, "--out", run)[0] == 0
    import consortium.core.run as core_run

    def unreadable(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(core_run, "read_checkpoint", unreadable)
    code, _, err = cli(capsys, "run", exp, "--out", run, "--resume")
    assert code == 1
    assert one_line(err) == (
        f"consortium: error: {run / 'fedavg' / 'checkpoint.npz'}: Permission denied"
    )


def test_check_validates_everything_and_writes_nothing(tmp_path, capsys):
    exp = write(tmp_path)
    code, out, err = cli(capsys, "run", exp, "--check", "--out", tmp_path / "run")
    assert code == 0 and err == ""
    assert "ok: quick: 4 members, methods fedavg" in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
    code, _, err = cli(capsys, "run", exp, "--check", "--set", 'methods=["aequa"]')
    assert code == 2 and "Aequa needs a slimmable model" in one_line(err)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from consortium.algorithms.fedavg import FedAvg

    def interrupted(self, grid, rnd):
        raise KeyboardInterrupt

    monkeypatch.setattr(FedAvg, "run_round", interrupted)
    code, _, err = cli(capsys, "run", write(tmp_path), "--out", tmp_path / "run")
    assert code == 130 and "interrupted; --resume continues" in one_line(err)
