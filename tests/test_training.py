"""Local training: the SGD and Adam steps are torch's, bit for bit, without torch's first-use
import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from consortium.models import build_model, get_arrays
from consortium.training import SGD, Adam, LocalTrainConfig, make_optimizer, train_local


def trained_with(make, freeze_first: bool = False) -> dict:
    """The small CNN after 8 steps of the optimiser ``make(params)`` builds (same data, same
    initial weights every call)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    torch.manual_seed(1)
    model = build_model("cnn", (1, 8, 8), 10)
    params = list(model.parameters())
    if freeze_first:
        params[0].requires_grad_(False)  # a frozen tensor gets no state and no step
    opt = make(params)
    for _ in range(8):
        idx = rng.permutation(96)[:16]
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return get_arrays(model)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("momentum", "weight_decay", "lr"), [(0.9, 0.0, 0.05), (0.0, 0.0, 0.1), (0.5, 1e-3, 0.3)]
)
def test_sgd_matches_torch_optim_sgd_bit_for_bit(momentum, weight_decay, lr):
    kw = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    ours = trained_with(lambda p: SGD(p, **kw))
    assert same(ours, trained_with(lambda p: torch.optim.SGD(p, **kw)))
    assert not same(ours, trained_with(lambda p: SGD(p, **{**kw, "lr": 2 * lr})))


@pytest.mark.parametrize(("lr", "weight_decay"), [(1e-3, 0.0), (0.1, 0.0), (0.01, 1e-2)])
def test_adam_matches_torch_optim_adam_bit_for_bit(lr, weight_decay):
    kw = dict(lr=lr, weight_decay=weight_decay)
    ours = trained_with(lambda p: Adam(p, **kw), freeze_first=True)
    assert same(ours, trained_with(lambda p: torch.optim.Adam(p, **kw), freeze_first=True))
    assert not same(ours, trained_with(lambda p: Adam(p, **{**kw, "lr": 2 * lr}), True))


def test_sgd_skips_frozen_parameters_and_opacus_gets_torch_optimisers():
    frozen, live = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = SGD([frozen, live], lr=0.5, momentum=0.9)
    live.grad = torch.ones(3)
    opt.step()
    assert torch.equal(frozen, torch.ones(3)) and torch.equal(live, torch.full((3,), 0.5))
    opt.zero_grad(set_to_none=False)
    assert torch.equal(live.grad, torch.zeros(3))
    cfg = LocalTrainConfig(optimizer="adam")
    assert isinstance(make_optimizer([live], cfg), Adam)
    assert isinstance(make_optimizer([live], cfg, torch_optim=True), torch.optim.Adam)


def test_training_a_member_does_not_import_torch_dynamo():
    code = (
        "import sys, numpy as np, torch\n"
        "from consortium.models import build_model\n"
        "from consortium.training import LocalTrainConfig, train_local\n"
        "from consortium.metrics.unlearning import invert_classes\n"
        "m = build_model('cnn', (1, 8, 8), 10)\n"
        "x = np.zeros((20, 1, 8, 8), np.float32); y = np.zeros(20, np.int64)\n"
        "train_local(m, x, y, np.arange(20), LocalTrainConfig(), 0)\n"
        "train_local(m, x, y, np.arange(20), LocalTrainConfig(optimizer='adam'), 0)\n"
        "invert_classes(m, torch.tensor([1, 2]), torch.zeros(2, 1, 8, 8), torch.sigmoid, steps=2)\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_train_local_is_seeded():
    x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
    y = np.arange(40) % 10
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("cnn", (1, 8, 8), 10)
        train_local(model, x, y, np.arange(40), LocalTrainConfig(batch_size=8), seed=4)
        runs.append(get_arrays(model))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
