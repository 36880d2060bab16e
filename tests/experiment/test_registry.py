"""Methods, datasets and models that register themselves; a user's own, loaded as a plugin,
named in a TOML file run by the CLI; the typed Python path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consortium.algorithms.registry import methods
from consortium.cli import main
from consortium.config import ConfigError
from consortium.data import available_datasets
from consortium.experiment import Experiment, experiment_from_dict, run_experiment

PLUGIN = textwrap.dedent(
    '''
    """A user's method and dataset, registered when this module is imported."""
    import numpy as np
    from pydantic import Field

    from consortium.algorithms.base.supervised import supervised_client_app
    from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
    from consortium.algorithms.registry import MethodSpec, register_method
    from consortium.data import Dataset, DatasetSplits, register_dataset


    class HalfStepConfig(FedAvgConfig):
        shrink: float = Field(0.5, gt=0, le=1, description="share of the averaged step taken")


    class HalfStep(FedAvg):
        name = "half_step"

        def aggregate(self, updates):
            mean = super().aggregate(updates)
            s = self.config.shrink
            return {k: (self.weights[k] + s * (mean[k] - self.weights[k])).astype(mean[k].dtype)
                    for k in mean}


    def build(ctx, cfg):
        wf = HalfStep(cfg, ctx.model_fn, ctx.data.test_x, ctx.data.test_y, ctx.device)
        return wf, supervised_client_app(ctx.model_fn, ctx.device)


    register_method(MethodSpec("half_step", HalfStepConfig, build, "FedAvg, half a step"))


    def blobs(path):
        rng = np.random.default_rng(0)
        y = np.arange(200) % 2
        x = (rng.normal(size=(200, 1, 4, 4)) + y[:, None, None, None]).astype(np.float32)
        return DatasetSplits(Dataset("blobs", x, y.astype(np.int64), 2), None)


    register_dataset("blobs", load=blobs, description="two Gaussian blobs (a user's dataset)")
    '''
)

EXPERIMENT = """
name = "mine"
methods = ["half_step"]
[data]
dataset = "blobs"
num_clients = 4
[model]
name = "mlp"
[federation]
rounds = 2
[half_step]
shrink = 0.25
"""


def test_every_builtin_method_and_dataset_is_registered():
    names = set(methods())
    assert {"fedavg", "fedprox", "scaffold", "aequa", "aequa_training_time", "cgsv"} <= names
    assert {"iafl", "fedra", "inclusivefl", "depthfl", "all_large", "all_small"} <= names
    assert {"dmtrl", "mtrl_centralised", "single_task", "global_model"} <= names
    assert {"standalone", "centralised"} <= names
    assert set(available_datasets()) >= {
        "digits", "fashion_mnist", "mnist5k", "spam_assassin", "domainnet", "nico_pp",
        "mtl_synthetic", "school_hsb82", "school_exam", "digits_ovr", "fashion_mnist_ovr",
    }  # fmt: skip


def test_cli_lists_every_dataset_an_experiment_accepts(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in available_datasets():
        assert name in out, name


def test_cli_prints_a_methods_options_with_defaults_and_help(capsys):
    assert main(["methods", "fedprox"]) == 0
    out = capsys.readouterr().out
    assert "prox_mu" in out and "0.01" in out and "proximal coefficient" in out
    assert "weighted" in out and "rounds" not in out.split("shared")[0]  # shared ones listed apart
    assert main(["methods", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_a_plugin_registers_a_method_and_a_dataset_a_toml_file_uses(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    toml = tmp_path / "mine.toml"
    toml.write_text(EXPERIMENT)
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{Path.cwd() / 'src'}"}
    cmd = [sys.executable, "-m", "consortium.cli"]
    out = tmp_path / "run"
    # Without the plugin the names are unknown: one line, exit 2.
    bad = subprocess.run([*cmd, "run", str(toml), "--out", str(out)], env=env, capture_output=True)
    assert bad.returncode == 2 and b"unknown method 'half_step'" in bad.stderr
    ok = subprocess.run(
        [*cmd, "--plugin", "my_methods", "run", str(toml), "--out", str(out), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    summary = json.loads((out / "half_step" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["test_accuracy"] > 0.5
    saved = (out / "config.toml").read_text()
    assert "shrink = 0.25" in saved and 'dataset = "blobs"' in saved
    # The plugin can also be named in the file itself.
    toml.write_text('plugins = ["my_methods"]\n' + EXPERIMENT)
    again = subprocess.run(
        [*cmd, "run", str(toml), "--out", str(tmp_path / "run2"), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr


def test_a_missing_plugin_is_a_one_line_error(capsys):
    assert main(["--plugin", "no_such_module_here", "methods"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_module_here" in err and len(err.splitlines()) == 1


def test_the_typed_path_builds_and_runs(tmp_path):
    exp = Experiment(
        name="typed",
        methods=["fedavg", "fedprox"],
        data={"num_clients": 3},
        federation={"rounds": 1},
        method_options={"fedprox": {"prox_mu": 0.1}},
    )
    assert exp.method_options["fedavg"].rounds == 1  # shared fields filled in
    assert exp.method_options["fedprox"].prox_mu == 0.1
    result = run_experiment(exp, tmp_path, progress=False)
    assert set(result.summaries) == {"fedavg", "fedprox"}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"methods": ["fedavgg"]}, "unknown method 'fedavgg'"),
        ({"fedavg": {"rounds": 3}}, "fedavg.rounds: set in [federation]"),
        ({"fedprox": {"prox_mu": -1}, "methods": ["fedprox"]}, "fedprox.prox_mu"),
        ({"train": {"epochs": True}}, "train.epochs"),  # a bool is not an int
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"data": {"dataset": "nope"}}, "unknown dataset 'nope'"),
        ({"data": {"options": {"x": 1}}}, "data.options: dataset 'digits' takes no options"),
    ],
)
def test_typed_and_dict_paths_fail_with_one_line(raw, message):
    with pytest.raises(ConfigError) as err:
        experiment_from_dict({"name": "bad", **raw})
    assert message in str(err.value) and "\n" not in str(err.value)
