"""Tracking: a run's rounds, configuration and report read back from the real libraries
(an MLflow file store, TensorBoard event files) and from the CSV files."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from consortium.cli import main
from consortium.config import ConfigError
from consortium.core.run import read_jsonl
from consortium.experiment import experiment_from_dict, run_experiment
from consortium.tracking import TrackingConfig, flatten, numbers, open_trackers

TINY = {
    "name": "tracked",
    "methods": ["fedavg", "standalone"],
    "data": {"num_clients": 3, "max_samples": 300},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "federation": {"rounds": 3},
}


def tiny(**tracking):
    return experiment_from_dict({**TINY, "tracking": tracking})


def test_numbers_keep_finite_scalars_only():
    line = {"round": 3, "test_accuracy": 0.5, "replies": 4, "ok": True, "failures": {"1": "x"},
            "sampled": [1, 2], "note": "s", "bad": float("nan")}  # fmt: skip
    assert numbers(line) == {"test_accuracy": 0.5, "replies": 4.0}
    assert flatten({"a": 1, "b": {"c": [1, 2], "d": "x", "e": {}}}) == {
        "a": "1",
        "b.c": "[1, 2]",
        "b.d": "x",
        "b.e": "{}",
    }


def test_mlflow_file_store_holds_every_round_the_config_and_the_report(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    result = run_experiment(tiny(mlflow=True), run_dir, progress=False)
    store = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tracked", "fedavg", "standalone"}
    parent = runs["tracked"]
    assert parent.data.params["data.num_clients"] == "3"
    assert parent.data.params["federation.rounds"] == "3"
    assert parent.data.params["fedavg.weighted"] == "true"
    assert parent.info.status == "FINISHED"
    fedavg = runs["fedavg"]
    assert fedavg.data.tags["mlflow.parentRunId"] == parent.info.run_id
    history = client.get_metric_history(fedavg.info.run_id, "test_accuracy")
    expected = [(r["round"], r["test_accuracy"]) for r in result.results["fedavg"].rounds]
    assert sorted((m.step, m.value) for m in history) == expected
    assert [m.step for m in history] == [1, 2, 3]
    final = fedavg.data.metrics["final.test_accuracy"]
    assert final == pytest.approx(result.summaries["fedavg"]["test_accuracy"])
    assert fedavg.data.params["weighted"] == "true"
    top = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "config.toml", "accuracy.png", "client_accuracy.png"} <= top
    assert {f.path for f in client.list_artifacts(fedavg.info.run_id)} == {"summary.json"}
    ids = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert ids["runs"]["fedavg"] == fedavg.info.run_id


def test_tensorboard_event_files_hold_every_round_and_the_plots(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    result = run_experiment(tiny(tensorboard=True), run_dir, progress=False)
    acc = EventAccumulator(str(run_dir / "tensorboard" / "fedavg"), size_guidance={"images": 0})
    acc.Reload()
    scalars = [(e.step, e.value) for e in acc.Scalars("test_accuracy")]
    expected = [(r["round"], r["test_accuracy"]) for r in result.results["fedavg"].rounds]
    assert [s for s, _ in scalars] == [1, 2, 3]
    assert [v for _, v in scalars] == pytest.approx([v for _, v in expected])
    assert "bytes_up" in acc.Tags()["scalars"]
    report = EventAccumulator(str(run_dir / "tensorboard" / "report"), size_guidance={"images": 0})
    report.Reload()
    assert {"accuracy.png", "client_accuracy.png"} <= set(report.Tags()["images"])
    image = report.Images("accuracy.png")[0]
    assert image.width > 100 and image.height > 100


def test_csv_has_one_row_per_round(tmp_path):
    run_dir = tmp_path / "run"
    run_experiment(tiny(csv=True), run_dir, progress=False)
    with open(run_dir / "fedavg" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    jsonl = read_jsonl(run_dir / "fedavg" / "metrics.jsonl")
    assert [int(r["round"]) for r in rows] == [r["round"] for r in jsonl] == [1, 2, 3]
    assert [float(r["test_accuracy"]) for r in rows] == [r["test_accuracy"] for r in jsonl]
    assert "bytes_up_by_client" not in rows[0] and "bytes_up" in rows[0]
    assert (run_dir / "standalone" / "metrics.csv").exists()


def test_cli_flags_and_set_switch_tracking_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    toml = tmp_path / "exp.toml"
    toml.write_text(
        'name = "cli-tracked"\nmethods = ["fedavg"]\n[data]\nnum_clients = 3\nmax_samples = 300\n'
        '[model]\nname = "mlp"\n[federation]\nrounds = 2\n'
    )
    store = tmp_path / "store"
    uri = f"tracking.mlflow_uri='{store.as_uri()}'"
    code = main(["run", str(toml), "--out", str(tmp_path / "a"), "--no-progress",
                 "--set", "tracking.mlflow=true", "--set", uri, "--track", "csv"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("cli-tracked")
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "fedavg"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert (tmp_path / "a" / "fedavg" / "metrics.csv").exists()
    assert "[tracking]" in (tmp_path / "a" / "config.toml").read_text()


def test_resume_continues_the_same_mlflow_runs(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    exp = tiny(mlflow=True)
    run_experiment(exp, run_dir, progress=False)
    ids = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["runs"]
    run_experiment(exp, run_dir, resume=True, progress=False)  # a finished run: nothing new
    again = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["runs"]
    assert again == ids
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    history = client.get_metric_history(ids["fedavg"], "test_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]  # not logged twice


def test_tracking_turned_on_at_resume_logs_the_earlier_rounds(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_experiment(tiny(), run_dir, progress=False)
    run_experiment(tiny(tensorboard=True), run_dir, resume=True, progress=False)
    acc = EventAccumulator(str(run_dir / "tensorboard" / "fedavg"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("test_accuracy")] == [1, 2, 3]


def test_a_missing_library_is_a_one_line_error_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(ConfigError, match=r"tracking.mlflow needs: pip install"):
        open_trackers(TrackingConfig(mlflow=True))
    with pytest.raises(ConfigError):
        run_experiment(tiny(mlflow=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "raw, message",
    [({"mlflow": 1}, "tracking.mlflow"), ({"wandb": True}, "tracking.wandb: unknown key")],
)
def test_bad_tracking_options_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict({**TINY, "tracking": raw})
