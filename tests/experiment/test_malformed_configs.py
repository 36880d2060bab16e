"""The malformed-configuration corpus (malformed_configs.toml, 100 cases) through
``consortium run``: every case is a one-line error with exit status 2 and no run folder, or a
documented valid configuration (a few of which stop by design: exit status 1, one line, no
folder); never a traceback, never a hang (each case has a deadline)."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import pytest
import torch

from consortium.cli import main

CORPUS = Path(__file__).with_name("malformed_configs.toml")
CASES = tomllib.loads(CORPUS.read_text())["case"]

BASE = """
name = "corpus"
seed = 0
methods = ["fedavg"]
[data]
dataset = "digits"
num_clients = 4
max_samples = 300
[model]
name = "mlp"
options = {hidden = [16]}
[federation]
rounds = 2
"""

#: Seconds a case may take: errors are found before any training; valid runs are tiny.
DEADLINE = {"error": 30, "valid": 90, "stops": 90}


class Hang(Exception):
    """A case ran past its deadline."""


def _deadline(signum, frame):
    raise Hang


def test_the_corpus_holds_one_hundred_distinct_cases():
    ids = [c["id"] for c in CASES]
    assert len(ids) == 100 and len(set(ids)) == 100
    for case in CASES:
        assert case["expect"] in DEADLINE, case["id"]
        assert ("set" in case) != ("text" in case), case["id"]
        assert case.get("says") or case.get("why"), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_a_malformed_config_is_one_line_or_documented_valid(case, tmp_path, capsys):
    expect = case["expect"]
    if case.get("cuda") == "valid" and torch.cuda.is_available():
        expect = "valid"
    path = tmp_path / "exp.toml"
    path.write_text(case.get("text", BASE))
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--no-progress"]
    for override in case.get("set", []):
        args += ["--set", override]
    if expect == "valid" and not case.get("run"):
        args.append("--check")
    # A deadline by timer signal: the runtime keeps an outer timer running around its own.
    previous = signal.signal(signal.SIGALRM, _deadline)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE[expect])
    try:
        code = main(args)
    except Hang:
        pytest.fail(f"{case['id']}: still running after {DEADLINE[expect]} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if expect == "valid":
        assert code == 0, err
        assert err == ""
        return
    assert code == (2 if expect == "error" else 1), err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("consortium: error: "), err
    assert case["says"] in err, err
    # an error is found before the folder is made; a run that stops trained nothing
    assert not out.exists(), "a run that ended in an error left a run folder"
