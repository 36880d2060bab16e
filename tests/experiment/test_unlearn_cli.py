"""`consortium unlearn` on a saved run, as a user calls it."""

import json

import pytest

from consortium.cli import main

RUN = """
name = "base"
seed = 0
methods = ["fedavg"]
[data]
dataset = "digits"
num_clients = 4
[model]
name = "cnn"
[train]
epochs = 2
[federation]
rounds = 8
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unlearn")
    exp = tmp / "exp.toml"
    exp.write_text(RUN)
    assert main(["run", str(exp), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def test_unlearn_a_class_writes_results(run_dir, capsys):
    args = [
        "unlearn",
        str(run_dir),
        "--class",
        "2",
        "--methods",
        "selective,finetune",
        "--no-progress",
        "--set",
        "unlearn.shadow_attack=false",
    ]
    assert main(args) == 0
    out = run_dir / "unlearn-class2"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"original", "selective", "finetune"}
    assert summary["selective"]["forget_accuracy"] < summary["original"]["forget_accuracy"]
    assert (out / "unlearning.png").exists()
    assert (out / "selective" / "model.npz").exists()
    assert "forget acc" in capsys.readouterr().out
    assert main(args) == 2  # results exist: not overwritten silently
    assert "--resume or --overwrite" in capsys.readouterr().err


def test_unlearn_a_members_samples(run_dir, capsys):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data"]["num_clients"] == 4
    from consortium.data import build_data
    from consortium.experiment import load_experiment

    exp = load_experiment(run_dir / "config.toml")
    data = build_data(exp.data, exp.seed)
    ids = data.client(1).train_indices[:5].tolist()
    args = [
        "unlearn",
        str(run_dir),
        "--client",
        "1",
        "--samples",
        ",".join(map(str, ids)),
        "--methods",
        "selective,gradient_ascent",
        "--no-progress",
        "--set",
        "unlearn.shadow_attack=false",
    ]
    assert main(args) == 0
    summary = json.loads((run_dir / "unlearn-client1-samples5" / "summary.json").read_text())
    assert {"selective", "gradient_ascent"} <= set(summary)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "say what to forget"),
        (["--client", "9"], "no member 9"),
        (["--class", "2", "--methods", "bogus"], "unknown unlearning method"),
        (["--client", "1", "--samples", "999999"], "not member 1's training samples"),
        (["--class", "2", "--from", "nothing"], "no saved model"),
    ],
)
def test_bad_requests_exit_2(run_dir, capsys, flags, expected):
    assert main(["unlearn", str(run_dir), *flags, "--no-progress", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


AEQUA_RUN = """
name = "aequa-base"
seed = 0
methods = ["aequa"]
[data]
dataset = "digits"
num_clients = 4
server_val_fraction = 0.15
[model]
name = "slim_cnn"
[train]
epochs = 1
[federation]
rounds = 6
[aequa]
contribution = "data_size"
measure_standalone = false
"""


def test_an_aequa_trained_slimmable_model_can_be_unlearned(tmp_path, capsys):
    """Methods compose: the slimmable model Aequa trained is unlearned like any CNN."""
    exp = tmp_path / "exp.toml"
    exp.write_text(AEQUA_RUN)
    run = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run), "--no-progress"]) == 0
    args = ["unlearn", str(run), "--class", "2", "--from", "aequa", "--methods", "selective"]
    assert main([*args, "--no-progress", "--set", "unlearn.shadow_attack=false"]) == 0
    summary = json.loads((run / "unlearn-class2" / "summary.json").read_text())
    assert summary["original"]["forget_accuracy"] > 0.5
    assert summary["selective"]["forget_accuracy"] < 0.1
    assert 0 < summary["selective"]["parameters_touched"] < summary["selective"]["parameters_total"]


def test_report_renders_unlearning_folders_from_their_own_files(run_dir, capsys):
    args = ["unlearn", str(run_dir), "--class", "5", "--methods", "finetune", "--no-progress"]
    args += ["--set", "unlearn.shadow_attack=false", "--set", "unlearn.baseline_rounds=1"]
    assert main(args) == 0
    request = run_dir / "unlearn-class5"
    results = (request / "summary.json").read_bytes()
    table = (request / "summary.md").read_text()
    capsys.readouterr()
    # the run folder: its methods only; the request is listed apart, not as a row of dashes
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "unlearning requests:" in out and "unlearn-class5" in out
    assert "unlearn-class5" not in (run_dir / "summary.md").read_text()
    assert set(json.loads((run_dir / "summary.json").read_text())) == {"fedavg"}
    # the request folder: its own table, redrawn from its files, its results untouched
    (request / "summary.md").unlink()
    assert main(["report", str(request)]) == 0
    out = capsys.readouterr().out
    assert "forget acc" in out and "finetune" in out and "original" in out
    assert (request / "summary.json").read_bytes() == results
    assert (request / "summary.md").read_text() == table
