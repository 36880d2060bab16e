"""examples/own_data: a user's own model and own data (each hospital reads only its own
folder), in process and on a loopback Flower deployment with one folder per SuperNode."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from consortium.config import ConfigError
from consortium.data import DatasetNotFoundError, build_data
from consortium.experiment import load_experiment, run_experiment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_data"
OFFLINE = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@pytest.fixture
def hospitals(monkeypatch):
    """The example plugin, importable as ``hospitals`` (as PYTHONPATH=examples/own_data)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    path = os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    return importlib.import_module("hospitals")


def experiment(data_path, **over):
    sets = [f"data.path='{data_path}'", "data.num_clients=2", "federation.rounds=2",
            'methods=["fedavg"]', *(f"{k}={v}" for k, v in over.items())]  # fmt: skip
    return load_experiment(EXAMPLE / "hospitals.toml", sets)


def test_in_process_every_site_is_read_once_and_only_when_asked(hospitals, tmp_path):
    root = hospitals.make_example_sites(tmp_path / "data", sites=2)
    exp = experiment(root)
    data = build_data(exp.data, exp.seed)
    assert data.num_clients == 2 and data.input_shape == (8,) and len(data.test_y) == 200
    shutil.rmtree(root / "site-1")  # site 1's machine: not this one
    member = data.client(0)
    assert member.num_train + member.num_test == 60
    with pytest.raises(DatasetNotFoundError, match="site-1"):
        data.client(1)
    result = run_experiment(experiment(hospitals.make_example_sites(tmp_path / "d2", sites=2)),
                            tmp_path / "run", progress=False)  # fmt: skip
    assert result.summaries["fedavg"]["test_accuracy"] > 0.6
    assert result.summaries["fedavg"]["client_accuracy"].keys() == {"0", "1"}


def test_a_wrong_file_is_a_clear_error(hospitals, tmp_path):
    root = hospitals.make_example_sites(tmp_path / "data", sites=2, features=3)
    with pytest.raises(ValueError, match="4 columns, expected 8"):
        build_data(experiment(root).data, 0)  # features = 8 in the experiment
    shutil.rmtree(root / "server")
    data = build_data(experiment(root).data, 0)
    with pytest.raises(ValueError, match=r"site-0/records\.csv: 4 columns, expected 8"):
        data.client(0)
    with pytest.raises(ConfigError, match=r"data\.options\.features"):
        experiment(root, **{"data.options.features": 0})


@pytest.mark.slow
def test_on_flower_each_supernode_reads_only_its_own_folder(hospitals, tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    from consortium.experiment.flower import write_flower_app
    from consortium.runtime.flower import LoopbackFederation

    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    everything = hospitals.make_example_sites(tmp_path / "all", sites=2)
    # Each machine's disk: a site's SuperNode holds its own folder, the server its test set.
    for name in ("site-0", "site-1", "server"):
        shutil.copytree(everything / name, tmp_path / f"{name}-disk" / name)
    exp = experiment(everything)
    expected = run_experiment(exp, tmp_path / "in-process", progress=False).results["fedavg"]

    app = tmp_path / "app"
    write_flower_app(exp, app, run_dir=tmp_path / "run", reply_timeout=300,
                     data_path=str(tmp_path / "server-disk"))  # fmt: skip
    nodes = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    fed = LoopbackFederation(
        2, tmp_path / "fed", env=nodes,
        node_config=lambda i: {"data-path": str(tmp_path / f"site-{i}-disk")},
    )  # fmt: skip
    with fed:
        run = fed.run(app, timeout=500)
    assert run.ok, run.log[-3000:] + fed.read_log("superlink")[-2000:]
    # No site could have read another's folder: it is not on its disk.
    assert sorted(p.name for p in (tmp_path / "site-0-disk").iterdir()) == ["site-0"]
    import json

    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
             if s.strip()]  # fmt: skip
    assert [(r["round"], r["replies"], r["failures"]) for r in lines if r["phase"] == "train"] == [
        (1, 2, {}), (2, 2, {})
    ]  # fmt: skip
    saved = np.load(tmp_path / "run" / "model.npz")
    for name, value in expected.final_arrays.items():
        np.testing.assert_allclose(saved[name], value, atol=1e-6)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["client_accuracy"] == expected.summary["client_accuracy"]
