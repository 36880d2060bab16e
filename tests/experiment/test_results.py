"""Results back from a run folder: the trained model, and tables that keep full numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import consortium
import consortium.cli
from consortium.config import ConfigError
from consortium.data import build_data
from consortium.experiment import experiment_from_dict, run_experiment

TINY = {
    "name": "results",
    "methods": ["fedavg", "centralised"],
    "data": {"num_clients": 3, "max_samples": 300},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "federation": {"rounds": 2},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "run"
    result = run_experiment(experiment_from_dict(TINY), out, progress=False)
    return out, result


def _accuracy(model, exp_raw):
    exp = experiment_from_dict(exp_raw)
    data = build_data(exp.data, exp.seed)
    with torch.no_grad():
        pred = model(torch.as_tensor(data.test_x)).argmax(1).numpy()
    return float((pred == data.test_y).mean())


def test_load_model_gives_back_each_methods_trained_model(run):
    out, result = run
    first = consortium.load_model(out)  # the first method with a model: fedavg
    assert not first.training
    saved = np.load(out / "fedavg" / "model.npz")
    for name, tensor in first.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), saved[name])
    assert _accuracy(first, TINY) == pytest.approx(result.summaries["fedavg"]["test_accuracy"])
    central = consortium.load_model(out, "centralised")
    assert _accuracy(central, TINY) == pytest.approx(
        result.summaries["centralised"]["test_accuracy"]
    )


def test_load_model_without_data_json_rebuilds_the_data(run, tmp_path):
    out, _ = run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data.json").unlink()
    a, b = consortium.load_model(out), consortium.load_model(copy)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_load_model_refuses_what_is_not_the_models_weights(run, tmp_path):
    out, _ = run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    np.savez(copy / "fedavg" / "model.npz", W=np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="not the weights of model 'mlp'"):
        consortium.load_model(copy, "fedavg")
    with pytest.raises(FileNotFoundError, match="no such model"):
        consortium.load_model(copy, "scaffold")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        consortium.load_model(tmp_path)
    with pytest.raises(FileNotFoundError):
        consortium.load_model(tmp_path / "nowhere")


def test_tables_keep_full_numbers_when_not_on_a_terminal(run, capsys):
    out, result = run
    assert consortium.cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    assert f"{result.summaries['fedavg']['test_accuracy']:.4f}" in text
    assert "mean member acc" in text and "rejected" in text


def test_run_experiment_prints_full_numbers_off_a_terminal(run, capsys):
    out, result = run
    run_experiment(experiment_from_dict(TINY), out, resume=True, progress=False)  # finished
    text = capsys.readouterr().out
    assert "…" not in text, text
    assert f"{result.summaries['centralised']['test_accuracy']:.4f}" in text


def test_a_multi_task_run_writes_no_data_json_and_has_no_torch_model(tmp_path):
    raw = {"name": "mtl", "methods": ["dmtrl"], "data": {"dataset": "mtl_synthetic"},
           "federation": {"rounds": 3}}  # fmt: skip
    out = tmp_path / "run"
    run_experiment(experiment_from_dict(raw), out, progress=False)
    assert not (out / "data.json").exists() and (out / "dmtrl" / "model.npz").exists()
    with pytest.raises(ConfigError, match="train no torch network"):
        consortium.load_model(out)
