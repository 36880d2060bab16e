"""Local supervised training and evaluation, shared by members and reference trainers.

Federated and centralised runs call the same functions with the same batch order, so any
difference between them is the federation's doing, not the training loop's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

import consortium.privacy as privacy
from consortium.config import ConfigError, Options

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class LocalTrainConfig(Options):
    """How a member (or the centralised reference) trains on its samples: the ``[train]``
    table of an experiment.

    A fresh optimiser every round unless a method keeps its state.
    """

    epochs: int = Field(1, ge=1, le=10_000, description="passes over the local samples per round")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="mini-batch size")
    lr: float = Field(0.05, gt=0, le=100, description="learning rate")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd | adam")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty of the optimiser")
    dp_sgd_noise: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="DP-SGD noise multiplier (sample-level DP with Opacus; 0: off); batches "
        "become Poisson samples of expected size batch_size",
    )
    dp_sgd_clip: float = Field(
        1.0, gt=0, le=1e6, description="DP-SGD: bound on each sample's gradient norm"
    )
    dp_sgd_delta: float = Field(
        1e-5, gt=0, lt=1, description="DP-SGD: the delta at which members report their epsilon"
    )

    @field_validator("dp_sgd_noise")
    @classmethod
    def _opacus_installed(cls, v: float) -> float:
        if v > 0 and not privacy.available():
            raise ValueError(privacy.INSTALL_HINT)
        return v

    @property
    def dp_sgd(self) -> bool:
        """Whether members train with DP-SGD."""
        return self.dp_sgd_noise > 0

    def as_config(self) -> dict[str, Any]:
        """Flat form for a message's config."""
        return self.model_dump()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalTrainConfig:
        """Read the fields this class knows from a message's config."""
        return cls.model_validate({k: v for k, v in config.items() if k in cls.model_fields})


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> None:
    """A one-line :class:`~consortium.config.ConfigError` when ``name`` is no device this
    machine (and this torch build) offers; checked before a run starts, not in its first
    batch."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device: {name!r}, but this machine has no CUDA device (or this torch build "
                "has no CUDA); use auto or cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device: {name!r}, but this machine has {count} CUDA device(s)")
        return
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device: {name!r}, but MPS is not available here; use auto or cpu")
        return
    raise ConfigError(f"device: {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


def batch_order(indices: np.ndarray, batch_size: int, seed: int, epochs: int) -> list[np.ndarray]:
    """The mini-batches (index arrays) of ``epochs`` shuffled passes over ``indices``."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(epochs):
        perm = indices[rng.permutation(len(indices))]
        out.extend(perm[i : i + batch_size] for i in range(0, len(perm), batch_size))
    return out


def poisson_batches(
    indices: np.ndarray, sample_rate: float, steps: int, seed: int
) -> list[np.ndarray]:
    """``steps`` batches in which each index takes part independently with ``sample_rate``
    (DP-SGD's sampling, the one its accountant analyses; a batch may be empty)."""
    rng = np.random.default_rng(seed)
    return [indices[rng.random(len(indices)) < sample_rate] for _ in range(steps)]


def _zero_grad(params: list[torch.Tensor], set_to_none: bool) -> None:
    for p in params:
        if set_to_none:
            p.grad = None
        elif p.grad is not None:
            p.grad.zero_()


class SGD:
    """SGD with momentum and weight decay: ``torch.optim.SGD``'s update, step for step.

    Why not ``torch.optim.SGD`` itself: every ``torch.optim`` optimiser imports
    ``torch._dynamo`` (and sympy) on first use, 1.2 s on a quiet core and several under load,
    paid by every process that trains a member. This is the same arithmetic in the same order
    (torch's single-tensor path, the one it takes on CPU), so models come out bit-identical;
    the tests compare the two.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = [p for p in params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _zero_grad(self.params, set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(grad).detach()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            p.add_(grad, alpha=-self.lr)


class Adam:
    """Adam: ``torch.optim.Adam``'s update (no amsgrad), step for step, without its import.

    Same reason as :class:`SGD`: the server's class impressions and the unlearning check's model
    inversion optimise their inputs with Adam, and importing ``torch._dynamo`` on its first use
    cost more CPU time than the unlearning it served. Same arithmetic in the same order as
    torch's single-tensor path (the one it takes on CPU), so results are bit-identical; the tests
    compare the two.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.params = [p for p in params]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.moments: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.params)
        self.steps = [0] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _zero_grad(self.params, set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if self.moments[i] is None:
                self.moments[i] = (
                    torch.zeros_like(p, memory_format=torch.preserve_format),
                    torch.zeros_like(p, memory_format=torch.preserve_format),
                )
            exp_avg, exp_avg_sq = self.moments[i]  # type: ignore[misc]
            self.steps[i] += 1
            step = float(self.steps[i])
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


Optimizer = SGD | Adam | torch.optim.Optimizer


def make_optimizer(params: Any, cfg: LocalTrainConfig, torch_optim: bool = False) -> Optimizer:
    """The optimiser ``cfg`` names; ``torch_optim`` asks for a ``torch.optim`` one (Opacus)."""
    if cfg.optimizer == "adam":
        if torch_optim:
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if torch_optim:
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def cross_entropy(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


def train_batches(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    cfg: LocalTrainConfig,
    *,
    device: torch.device | None = None,
    loss_fn: LossFn = cross_entropy,
    prox_mu: float = 0.0,
    optimizer: Optimizer | None = None,
    clip_grad_norm: float = 0.0,
    expected_batch: int | None = None,
) -> dict[str, float]:
    """Run one optimiser step per batch; returns mean loss and counts.

    ``prox_mu > 0`` adds FedProx's proximal term (mu/2)·||w - w_start||² that keeps a member
    near the model it received; ``clip_grad_norm > 0`` clips the gradient's global norm. With
    ``cfg.dp_sgd_noise > 0`` every step is a DP-SGD step (see :mod:`consortium.privacy`; plain
    cross-entropy only: a proximal or correction term has no per-sample gradient to clip, and
    DP-SGD clips each sample's gradient itself) whose noisy sum is divided by
    ``expected_batch`` (default ``cfg.batch_size``).
    """
    device = device or next(model.parameters()).device
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.dp_sgd:
        opt = optimizer or make_optimizer(params, cfg)
        return _steps(model, x, y, batches, params, opt, device, loss_fn, prox_mu, clip_grad_norm)
    if prox_mu > 0 or loss_fn is not cross_entropy or clip_grad_norm > 0:
        raise ValueError(
            "DP-SGD trains plain cross-entropy only (no proximal or extra term, no other clipping)"
        )
    # Opacus wraps a torch.optim optimiser (this module's SGD is not one).
    opt = (
        optimizer
        if isinstance(optimizer, torch.optim.Optimizer)
        else make_optimizer(params, cfg, torch_optim=True)
    )
    with privacy.private_training(
        model,
        opt,
        noise_multiplier=cfg.dp_sgd_noise,
        max_grad_norm=cfg.dp_sgd_clip,
        expected_batch_size=expected_batch or cfg.batch_size,
    ) as (module, dp_opt):
        return _steps(module, x, y, batches, params, dp_opt, device, loss_fn, 0.0, 0.0)


def _steps(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    params: list[torch.nn.Parameter],
    opt: Any,
    device: torch.device,
    loss_fn: LossFn,
    prox_mu: float,
    clip_grad_norm: float,
) -> dict[str, float]:
    anchor = [p.detach().clone() for p in params] if prox_mu > 0 else None
    total, seen = 0.0, 0
    for idx in batches:
        if len(idx) == 0:  # only DP-SGD's Poisson batches can be empty
            privacy.noise_only_step(model, opt)
            continue
        xb = torch.from_numpy(x[idx]).to(device, non_blocking=True)
        yb = torch.from_numpy(y[idx]).to(device, non_blocking=True)
        loss = loss_fn(model, xb, yb)
        if anchor is not None:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
            loss = loss + 0.5 * prox_mu * prox
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, clip_grad_norm)
        opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return {"train_loss": total / max(seen, 1), "num_examples": float(seen), "steps": len(batches)}


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray,
    cfg: LocalTrainConfig,
    seed: int,
    **kwargs: Any,
) -> dict[str, float]:
    """Train ``cfg.epochs`` shuffled epochs on ``x[indices]``; see :func:`train_batches`."""
    if len(indices) == 0:
        return {"train_loss": 0.0, "num_examples": 0.0, "steps": 0}
    torch.manual_seed(seed)
    indices = np.asarray(indices)
    if cfg.dp_sgd:
        batches = poisson_batches(
            indices, dp_sample_rate(cfg, len(indices)), dp_steps(cfg, len(indices)), seed
        )
        kwargs.setdefault("expected_batch", min(cfg.batch_size, len(indices)))
    else:
        batches = batch_order(indices, cfg.batch_size, seed, cfg.epochs)
    result = train_batches(model, x, y, batches, cfg, **kwargs)
    result["num_examples"] = float(len(indices))
    return result


def dp_sample_rate(cfg: LocalTrainConfig, num_samples: int) -> float:
    """DP-SGD's per-step sampling rate: ``batch_size / num_samples`` (at most 1)."""
    return min(1.0, cfg.batch_size / max(num_samples, 1))


def dp_steps(cfg: LocalTrainConfig, num_samples: int) -> int:
    """DP-SGD steps of one local run: ``epochs`` passes of expected size ``batch_size``."""
    return cfg.epochs * -(-num_samples // cfg.batch_size)


def eval_batch_size(device: torch.device) -> int:
    """Samples per forward pass when only scoring: 128 on a CPU, 1024 on an accelerator.

    On a CPU a big batch's activations leave the caches: the small CNN scores Fashion-MNIST
    at 0.37 ms an image in batches of 1,024 and 0.13 ms in batches of 128 (digits: 16.8 vs
    12.9 µs; an MLP loses 20 % at 128), measured on one thread. An accelerator wants the
    large batch.
    """
    return 128 if device.type == "cpu" else 1024


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy on ``x[indices]`` (all rows when ``indices`` is None;
    ``batch_size`` by default :func:`eval_batch_size`)."""
    device = device or next(model.parameters()).device
    batch_size = batch_size or eval_batch_size(device)
    model.eval()
    n = len(y) if indices is None else len(indices)
    if n == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "num_examples": 0.0}
    correct, loss = 0, 0.0
    for start in range(0, n, batch_size):
        sel = slice(start, start + batch_size)
        idx = sel if indices is None else indices[sel]
        xb = torch.from_numpy(x[idx]).to(device)
        yb = torch.from_numpy(y[idx]).to(device)
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return {"accuracy": correct / n, "loss": loss / n, "num_examples": float(n)}
