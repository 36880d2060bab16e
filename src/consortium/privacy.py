"""Differential privacy: the accountant and DP-SGD, both from Opacus (``pip install
"consortium[dp]"``).

Two guarantees, for two questions a member asks:

* **member-level** (DP-FedAvg, the method ``dp_fedavg``): whatever a member's whole data set
  is, the released models change little in distribution. The server clips each member's
  update and adds Gaussian noise to their sum
  (:func:`~consortium.core.aggregation.noisy_clipped_mean`); :func:`epsilon` turns the noise
  multiplier, the members' sampling rate and the rounds into ε at a chosen δ;
* **sample-level** (DP-SGD, the ``[train]`` options ``dp_sgd_*``): whatever one training
  sample is, what its member sends changes little. Each member clips per-sample gradients and
  adds noise in every local step (Opacus's ``GradSampleModule`` and ``DPOptimizer``), and
  accounts its own ε over the steps it took.

The accountant is Opacus's Rényi-DP accountant for the Poisson-subsampled Gaussian
mechanism, so both samplers draw Poisson samples (each member, or each sample, takes part
independently with the sampling rate), as that analysis assumes. Nothing is written here
that Opacus already does.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from typing import Any

import torch
from torch import nn

INSTALL_HINT = 'differential privacy needs Opacus: pip install "consortium[dp]"'


def available() -> bool:
    """Whether Opacus is installed."""
    return find_spec("opacus") is not None


def _require() -> None:
    if not available():
        raise ImportError(INSTALL_HINT)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps, at ``delta`` (Opacus's RDP
    accountant); 0 for no steps, infinity without noise."""
    return epsilon_of([(noise_multiplier, sample_rate, steps)], delta)


def epsilon_of(history: Sequence[Sequence[float]], delta: float) -> float:
    """ε of a composition of ``(noise_multiplier, sample_rate, steps)`` phases, at ``delta``."""
    phases = [(float(z), float(q), int(n)) for z, q, n in history if int(n) > 0]
    if not phases:
        return 0.0
    if any(z <= 0 for z, _, _ in phases):
        return float("inf")
    _require()
    from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]

    accountant = RDPAccountant()
    accountant.load_state_dict({"history": phases, "mechanism": accountant.mechanism()})
    with _quiet():
        return float(accountant.get_epsilon(delta))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence "Optimal order is the largest alpha": the bound is valid, only not the
    tightest the accountant could give with more orders."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends ``target_epsilon`` at ``delta`` in ``steps`` steps
    (Opacus's search over the same accountant, to within 0.01 of ε)."""
    _require()
    from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]

    with _quiet():
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        )


def secret_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from the operating system: noise nobody can recompute
    from a run seed (which sits in the run folder's config)."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def check_model(model: nn.Module) -> None:
    """Refuse a model Opacus cannot give per-sample gradients for (BatchNorm mixes samples)."""
    _require()
    from opacus.validators import ModuleValidator  # type: ignore[import-untyped]

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"DP-SGD cannot train this model: {errors[0]}")


@contextmanager
def private_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[nn.Module, Any]]:
    """``(module, optimizer)`` that train ``model`` with DP-SGD (Abadi et al., CCS 2016):
    per-sample gradients clipped to ``max_grad_norm``, Gaussian noise of std
    ``noise_multiplier · max_grad_norm`` added to their sum, divided by the expected batch.

    ``model`` is trained in place; its hooks and per-sample gradients are removed on exit, so
    a scratch model can serve the next member.
    """
    check_model(model)
    from opacus import GradSampleModule  # type: ignore[import-untyped]
    from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]

    module = GradSampleModule(model)
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        generator=generator or secret_generator(next(model.parameters()).device),
    )
    try:
        with warnings.catch_warnings():
            # Opacus's hooks fire on inputs that need no gradient: expected, not a problem.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield module, dp_optimizer
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        module.remove_hooks()


def noise_only_step(module: nn.Module, optimizer: Any) -> None:
    """A DP-SGD step on an empty Poisson batch: no gradient, but the noise all the same (the
    accountant counts the step; skipping it would tell that the batch was empty)."""
    optimizer.zero_grad(set_to_none=True)
    for p in module.parameters():
        if p.requires_grad:
            empty = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            p.grad_sample = empty  # type: ignore[attr-defined]  # Opacus's per-sample slot
    optimizer.step()
