"""Aequa's defaults and the fair-reward family's guard rails: the budget training schedule,
Algorithm 1 by name, no allocation fitted on the test set, the headline numbers in the summary
table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from consortium.algorithms.aequa import Aequa, AequaConfig, aequa_client_app
from consortium.algorithms.aequa.client import slimmable_loss
from consortium.algorithms.aequa.config import NARROW_EVERY
from consortium.algorithms.fairness import StandaloneResult, reward_summary
from consortium.algorithms.iafl import IAFL, IAFLConfig
from consortium.cli import main
from consortium.config import ConfigError
from consortium.data import build_federated_data
from consortium.experiment import experiment_from_dict
from consortium.experiment.checks import prepare_experiment
from consortium.models import build_model
from consortium.models import slimmable as _slimmable  # noqa: F401  (registers slim_cnn)
from consortium.report.summary import summary_markdown


class WidthSpy(torch.nn.Module):
    """Stands in for a slimmable model: records the width of every pass."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, 2))
        self.widths: list[float] = []

    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        self.widths.append(width)
        return x @ self.w


def passes(batches: int, **options) -> list[float]:
    spy = WidthSpy()
    loss_fn = slimmable_loss(np.random.default_rng(0), 0.1, AequaConfig(**options), [])
    x, y = torch.ones(4, 3), torch.zeros(4, dtype=torch.long)
    for _ in range(batches):
        loss_fn(spy, x, y)
    return spy.widths


@pytest.mark.parametrize("every", [1, 3, NARROW_EVERY, 7])
def test_budget_training_adds_one_narrower_pass_per_narrow_every_batches(every):
    widths = passes(28, narrow_every=every)
    full = [w for w in widths if w == 1.0]
    narrow = [w for w in widths if w < 1.0]
    assert len(full) == 28  # the widest network sees every batch
    assert len(narrow) == 28 // every  # 28 batches hold that many whole periods
    assert all(0.1 <= w < 1.0 for w in narrow)


def test_algorithm1_by_name_trains_narrower_widths_on_every_batch():
    widths = passes(10, training="algorithm1", width_rule="sandwich", num_random=2)
    assert sum(w == 1.0 for w in widths) == 10
    assert sum(w < 1.0 for w in widths) == 30  # p_min and two random widths per batch
    assert AequaConfig(training="algorithm1").batches_per_narrow_pass == 1
    assert AequaConfig().batches_per_narrow_pass == NARROW_EVERY
    # What a member receives under Algorithm 1 validates there too (no stray narrow_every).
    cfg = AequaConfig(training="algorithm1").message_config()
    assert "narrow_every" not in cfg and cfg["training"] == "algorithm1"


def test_algorithm1_refuses_a_narrow_every_it_would_ignore():
    with pytest.raises(ValueError, match="narrow_every"):
        AequaConfig(training="algorithm1", narrow_every=4)


# -- no allocation fitted on the test set --------------------------------------------------


def experiment(methods, **sections):
    raw = {
        "name": "fair",
        "methods": methods,
        "data": {"dataset": "digits", "num_clients": 4, "partition": "quantity"},
        "model": {"name": "slim_cnn"},
        **sections,
    }
    return prepare_experiment(experiment_from_dict(raw))


@pytest.mark.parametrize(
    ("methods", "sections"),
    [
        (["aequa"], {}),
        (["fedavg", "aequa_training_time"], {}),
        (["iafl"], {"iafl": {"contribution": "standalone"}}),
    ],
)
def test_rewards_fitted_on_validation_need_a_validation_split(methods, sections):
    with pytest.raises(ConfigError) as err:
        experiment(methods, **sections)
    message = str(err.value)
    assert "data.server_val_fraction" in message and "\n" not in message
    assert message.startswith(methods[-1] + ":")
    # With the split the same experiment validates.
    raw_ok = experiment_from_dict(
        {
            "name": "fair",
            "methods": methods,
            "data": {"dataset": "digits", "num_clients": 4, "server_val_fraction": 0.1},
            "model": {"name": "slim_cnn"},
            **sections,
        }
    )
    prepare_experiment(raw_ok)
    assert raw_ok.methods == methods


def test_methods_that_fit_nothing_on_validation_run_without_the_split():
    experiment(["cgsv"])  # contributions only judge CGSV's rewards
    experiment(["iafl"])  # IAFL's default contributions are data sizes
    experiment(["fedavg"], aequa={"grid_step": 0.1})  # configured but not run: not checked


def test_the_cli_refuses_aequa_without_a_split_in_one_line(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "a"\nmethods = ["aequa"]\n[data]\ndataset = "digits"\nnum_clients = 4\n'
        '[model]\nname = "slim_cnn"\n'
    )
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "server_val_fraction" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "aequa").exists()  # refused before anything ran


def test_workflows_built_in_python_refuse_an_empty_validation_split():
    data = build_federated_data("digits", num_clients=4, seed=0)  # no server split
    model_fn = lambda: build_model("slim_cnn", data.input_shape, data.num_classes)  # noqa: E731
    empty_x, empty_y = data.test_x[:0], data.test_y[:0]
    with pytest.raises(ValueError, match="server_val_fraction"):
        Aequa(AequaConfig(), model_fn, empty_x, empty_y, data.test_x, data.test_y, "cpu")
    with pytest.raises(ValueError, match="standalone accuracies"):
        IAFL(
            IAFLConfig(contribution="standalone"),
            model_fn,
            empty_x,
            empty_y,
            data.test_x,
            data.test_y,
            "cpu",
        )
    IAFL(IAFLConfig(), model_fn, empty_x, empty_y, data.test_x, data.test_y, "cpu")
    assert aequa_client_app(model_fn, "cpu") is not None


# -- the headline numbers ------------------------------------------------------------------


def test_headline_ipr_is_on_the_common_test_set_and_own_views_are_secondary():
    standalone = StandaloneResult(
        own={0: 0.9, 1: 0.2, 2: 0.5},
        test={0: 0.3, 1: 0.3, 2: 0.9},
        num_train={0: 10.0, 1: 10.0, 2: 10.0},
    )
    contributions = {0: 1.0, 1: 2.0, 2: 3.0}
    reward_test = {0: 0.4, 1: 0.5, 2: 0.8}  # test set: members 0 and 1 gain, 2 does not
    own = {0: {"accuracy": 0.5}, 1: {"accuracy": 0.6}, 2: {"accuracy": 0.6}}  # own: 1 and 2
    s = reward_summary(contributions, reward_test, own, standalone)
    assert s["ipr"] == pytest.approx(2 / 3)
    assert s["ipr_own_view"] == pytest.approx(2 / 3)
    # The two differ on another draw: only member 1 gains on its own view.
    own[2] = {"accuracy": 0.4}
    s = reward_summary(contributions, reward_test, own, standalone)
    assert s["ipr"] == pytest.approx(2 / 3) and s["ipr_own_view"] == pytest.approx(1 / 3)
    assert s["reward_accuracy_range"] == [0.4, 0.8]
    assert "ipr_global" not in s


def test_the_summary_table_prints_rho_ipr_and_the_reward_range():
    summaries = {
        "fedavg": {"test_accuracy": 0.9, "rounds": 3},
        "aequa": {
            "test_accuracy": 0.91,
            "pearson": 0.987654,
            "ipr": 0.75,
            "ipr_own_view": 0.5,
            "reward_accuracy_range": [0.61234, 0.91],
            "rounds": 3,
        },
        "cgsv": {"test_accuracy": 0.8, "pearson": math.nan, "ipr": 0.25, "rounds": 3},
    }
    text = summary_markdown(summaries)
    header, _, fedavg, aequa, cgsv = text.strip().splitlines()
    for label in ("ρ", "IPR (test set)", "IPR (own views)", "reward acc range"):
        assert label in header
    assert "| 0.988 | 0.750 | 0.500 | 0.612–0.910 |" in aequa
    assert "| — | 0.250 | — | — |" in cgsv  # NaN ρ is undefined, not "nan"
    assert fedavg.count("—") >= 4
    plain = summary_markdown({"fedavg": summaries["fedavg"]})
    assert "ρ" not in plain  # the columns appear only when some method has them
