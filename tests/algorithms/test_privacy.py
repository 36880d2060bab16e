"""Differential privacy: DP-FedAvg's ε against Opacus's accountant, its noise and sampling;
DP-SGD's per-sample clipping against gradients computed by hand, and its members' ε."""

import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("opacus")
from opacus.accountants import RDPAccountant

from consortium import privacy
from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import DPFedAvg, DPFedAvgConfig, FedAvg, FedAvgConfig
from consortium.config import ConfigError
from consortium.core import Message, Update, run_workflow
from consortium.core.aggregation import noisy_clipped_mean
from consortium.core.sampling import rng_for
from consortium.data import build_federated_data
from consortium.experiment import experiment_from_dict
from consortium.models import build_model
from consortium.report.summary import summary_markdown
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig, train_local

LOCAL = LocalTrainConfig(epochs=1, batch_size=32, lr=0.05)


def accountant_epsilon(z, q, rounds, delta):
    acc = RDPAccountant()
    for _ in range(rounds):
        acc.step(noise_multiplier=z, sample_rate=q)
    return acc.get_epsilon(delta)


@pytest.fixture(scope="module")
def digits():
    data = build_federated_data("digits", num_clients=8, scheme="iid", seed=0)

    def mf():
        return build_model("mlp", data.input_shape, data.num_classes, hidden=(16,))

    return data, mf


def run(data, mf, workflow, seed=0):
    grid = LocalRuntime(supervised_client_app(mf, "cpu"), data.client, data.num_clients, seed=seed)
    return run_workflow(workflow, grid, progress=False)


def test_dp_fedavg_reports_the_accountants_epsilon_every_round(digits):
    data, mf = digits
    cfg = DPFedAvgConfig(
        rounds=4, clients_per_round=0.5, local=LOCAL, noise_multiplier=1.3, delta=1e-4
    )
    result = run(data, mf, DPFedAvg(cfg, mf, data.test_x, data.test_y, "cpu"))
    setup, *rounds = result.rounds
    assert setup["phase"] == "setup" and setup["noise_multiplier"] == 1.3
    for r, line in enumerate(rounds, start=1):
        assert line["dp_epsilon"] == pytest.approx(accountant_epsilon(1.3, 0.5, r, 1e-4))
    final = accountant_epsilon(1.3, 0.5, 4, 1e-4)
    assert result.summary["dp_epsilon"] == pytest.approx(final)
    assert result.summary["dp_delta"] == 1e-4 and result.summary["dp_rounds"] == 4
    assert result.summary["noise_multiplier"] == 1.3 and result.summary["sample_rate"] == 0.5
    # a count of members is a rate over the federation
    two = DPFedAvg(cfg.model_copy(update={"clients_per_round": 2}), mf, data.test_x, data.test_y)
    two.setup(LocalRuntime(supervised_client_app(mf), data.client, data.num_clients))
    assert two.sample_rate == 2 / 8


def test_target_epsilon_is_spent_by_the_end_of_the_run(digits):
    data, mf = digits
    cfg = DPFedAvgConfig(rounds=3, clients_per_round=1.0, local=LOCAL, target_epsilon=4.0)
    wf = DPFedAvg(cfg, mf, data.test_x, data.test_y, "cpu")
    result = run(data, mf, wf)
    z = result.rounds[0]["noise_multiplier"]  # chosen at set-up
    assert z == wf.noise_multiplier
    eps = result.summary["dp_epsilon"]
    assert eps == pytest.approx(accountant_epsilon(z, 1.0, 3, 1e-5))
    assert 4.0 - 0.05 <= eps <= 4.0
    louder = accountant_epsilon(z * 0.95, 1.0, 3, 1e-5)
    assert louder > 4.0  # a smaller noise multiplier would overspend: z is the one needed


def test_the_server_step_is_the_noisy_clipped_mean_over_the_expected_count(digits):
    data, mf = digits
    cfg = DPFedAvgConfig(
        rounds=1, clients_per_round=0.5, local=LOCAL, noise_multiplier=0.7, clip_norm=0.5,
        reproducible=True,
    )  # fmt: skip
    wf = DPFedAvg(cfg, mf, data.test_x, data.test_y, "cpu")
    grid = LocalRuntime(supervised_client_app(mf), data.client, data.num_clients, seed=3)
    wf.setup(grid)
    start = dict(wf.weights)
    replies = {
        c: Message(
            "train", {k: v + 0.1 * (c + 1) for k, v in start.items()}, {}, {"num_examples": 9}
        )
        for c in (1, 4)
    }
    wf.aggregate_train(grid, 1, replies)
    expected = noisy_clipped_mean(
        [Update(r.arrays) for r in replies.values()], start, 0.5, 0.7, 0.5 * 8,
        rng_for(3, "dp-noise", 1),
    )  # fmt: skip
    for k in start:
        np.testing.assert_array_equal(wf.weights[k], expected[k])
    assert wf.released == 1


def test_members_are_poisson_sampled_and_secret_unless_reproducible(digits):
    data, mf = digits
    grid = LocalRuntime(supervised_client_app(mf), data.client, data.num_clients, seed=1)
    cfg = DPFedAvgConfig(rounds=1, clients_per_round=0.25, local=LOCAL)
    a, b = (DPFedAvg(cfg, mf, data.test_x, data.test_y) for _ in range(2))
    for wf in (a, b):
        wf.setup(grid)
    draws_a = [a.sample(grid, r) for r in range(400)]
    counts = [len(s) for s in draws_a]
    assert np.mean(counts) == pytest.approx(0.25 * 8, abs=0.25)
    assert len(set(counts)) > 3  # a random number of members, not a fixed count
    assert draws_a != [b.sample(grid, r) for r in range(400)]  # not from the run seed
    rep = DPFedAvg(cfg.model_copy(update={"reproducible": True}), mf, data.test_x, data.test_y)
    rep.setup(grid)
    assert [rep.sample(grid, r) for r in range(20)] == [rep.sample(grid, r) for r in range(20)]


def test_a_round_nobody_was_drawn_for_still_releases_noise(digits):
    data, mf = digits
    cfg = DPFedAvgConfig(rounds=1, clients_per_round=0.1, local=LOCAL, noise_multiplier=1.0)
    wf = DPFedAvg(cfg, mf, data.test_x, data.test_y)
    grid = LocalRuntime(supervised_client_app(mf), data.client, data.num_clients)
    wf.setup(grid)
    start = dict(wf.weights)
    metrics = wf.aggregate_train(grid, 1, {})
    assert metrics["dp_epsilon"] > 0
    assert all(not np.array_equal(wf.weights[k], start[k]) for k in start)


def test_dp_options_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="weighted"):
        DPFedAvgConfig(weighted=True)
    with pytest.raises(ValueError, match="clipped mean"):
        DPFedAvgConfig(aggregation={"rule": "median"})
    with pytest.raises(ValueError, match="not both"):
        DPFedAvgConfig(noise_multiplier=1.0, target_epsilon=2.0)
    with pytest.raises(ConfigError, match=r"^dp_fedavg.clip_norm: "):
        experiment_from_dict({"name": "x", "methods": ["dp_fedavg"], "dp_fedavg": {"clip_norm": 0}})
    exp = experiment_from_dict(
        {"name": "x", "methods": ["dp_fedavg"], "dp_fedavg": {"target_epsilon": 8}}
    )
    assert exp.method_options["dp_fedavg"].target_epsilon == 8.0


def test_without_opacus_dp_options_are_a_one_line_error(monkeypatch):
    monkeypatch.setattr(privacy, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"consortium\[dp\]"):
        experiment_from_dict({"name": "x", "methods": ["dp_fedavg"]})
    with pytest.raises(ConfigError, match=r"^train.dp_sgd_noise: .*consortium\[dp\]"):
        experiment_from_dict({"name": "x", "train": {"dp_sgd_noise": 1.0}})


def test_the_summary_table_shows_epsilon():
    table = summary_markdown(
        {"dp_fedavg": {"test_accuracy": 0.5, "dp_epsilon": 3.14159}, "fedavg": {}}
    )
    assert "ε (members)" in table and "| 3.14 |" in table


def test_the_state_resumes_the_account(digits):
    data, mf = digits
    cfg = DPFedAvgConfig(rounds=2, local=LOCAL, noise_multiplier=2.0)
    wf = DPFedAvg(cfg, mf, data.test_x, data.test_y)
    wf.noise_multiplier, wf.sample_rate, wf.released = 2.0, 0.5, 7
    again = DPFedAvg(cfg, mf, data.test_x, data.test_y)
    again.load_state_dict(wf.state_dict())
    assert again.epsilon() == pytest.approx(accountant_epsilon(2.0, 0.5, 7, 1e-5))


# --- DP-SGD ---------------------------------------------------------------------------------


def per_sample_clipped_step(model, x, y, clip, lr, expected):
    """One DP-SGD step without noise, by hand: clip each sample's gradient, sum, average."""
    grads = []
    for i in range(len(y)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = [p.grad.detach().clone() for p in model.parameters()]
        norm = torch.sqrt(sum((t**2).sum() for t in g))
        grads.append([t * min(1.0, clip / float(norm)) for t in g])
    with torch.no_grad():
        return [
            p - lr * sum(gs[j] for gs in grads) / expected for j, p in enumerate(model.parameters())
        ]


def test_dp_sgd_clips_each_samples_gradient():
    torch.manual_seed(0)
    x = torch.randn(20, 6)
    y = torch.randint(0, 3, (20,))
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    by_hand = per_sample_clipped_step(model, x, y, clip=0.1, lr=0.5, expected=20)
    cfg = LocalTrainConfig(
        epochs=1, batch_size=20, lr=0.5, momentum=0.0, dp_sgd_noise=1e-9, dp_sgd_clip=0.1
    )
    train_local(model, x.numpy(), y.numpy(), np.arange(20), cfg, seed=0)  # q = 1: every sample
    for p, q in zip(model.parameters(), by_hand, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-4, atol=1e-6)
    # Opacus's hooks are gone: the scratch model serves the next member as a plain model
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert not any(getattr(p, "grad_sample", None) is not None for p in model.parameters())


def test_dp_sgd_adds_noise_of_the_configured_scale():
    torch.manual_seed(0)
    model = nn.Linear(50, 2, bias=False)
    nn.init.zeros_(model.weight)
    x = np.zeros((10, 50), np.float32)  # zero inputs: zero gradients, only noise moves w
    y = np.zeros(10, np.int64)
    cfg = LocalTrainConfig(
        epochs=1, batch_size=10, lr=1.0, momentum=0.0, dp_sgd_noise=2.0, dp_sgd_clip=0.5
    )
    train_local(model, x, y, np.arange(10), cfg, seed=0)
    w = model.weight.detach().numpy().ravel()
    assert w.std() == pytest.approx(2.0 * 0.5 / 10, rel=0.25)
    again = nn.Linear(50, 2, bias=False)
    nn.init.zeros_(again.weight)
    train_local(again, x, y, np.arange(10), cfg, seed=0)
    assert not np.array_equal(w, again.weight.detach().numpy().ravel())  # secret noise


def test_dp_sgd_refuses_what_it_cannot_clip():
    cfg = LocalTrainConfig(dp_sgd_noise=1.0)
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="plain cross-entropy"):
        train_local(nn.Linear(4, 2), x, y, np.arange(8), cfg, seed=0, prox_mu=0.1)
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="DP-SGD cannot train this model"):
        train_local(bn, x, y, np.arange(8), cfg, seed=0)


def test_members_report_their_dp_sgd_epsilon_and_the_summary_the_largest(digits):
    data, mf = digits
    local = LocalTrainConfig(epochs=2, batch_size=16, lr=0.05, dp_sgd_noise=1.1, dp_sgd_delta=1e-4)
    cfg = FedAvgConfig(rounds=2, local=local)
    result = run(data, mf, FedAvg(cfg, mf, data.test_x, data.test_y, "cpu"))
    sizes = [len(data.client(c).train_indices) for c in range(data.num_clients)]
    expected = max(accountant_epsilon(1.1, 16 / n, 2 * 2 * math.ceil(n / 16), 1e-4) for n in sizes)
    assert result.summary["dp_sgd_epsilon"] == pytest.approx(expected)
    assert result.rounds[-1]["dp_sgd_epsilon"] == pytest.approx(expected)
    assert result.rounds[-2]["dp_sgd_epsilon"] < expected
    assert result.summary["dp_sgd_delta"] == 1e-4
    assert result.summary["test_accuracy"] > 0.3  # it still learns
