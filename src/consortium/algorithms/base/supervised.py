"""Member handlers and server helpers shared by every supervised method.

A member that trains a received model on its samples, or evaluates it on its test view, does
the same thing under FedAvg, FedProx, the centralised reference's evaluation and the fairness
baselines; methods add handlers for what is theirs and reuse these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import consortium.privacy as privacy
from consortium.core.client import ClientApp, ClientContext
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.sampling import derive_seed
from consortium.core.validation import ReplySpec
from consortium.models.weights import get_arrays, set_arrays
from consortium.training import (
    LocalTrainConfig,
    dp_sample_rate,
    evaluate,
    resolve_device,
    train_local,
)

ModelFn = Callable[[], nn.Module]


class ScratchModel:
    """One model instance reused for every member the process serves.

    Building a model per message would cost an initialisation each time, and keeping one per
    member would make memory grow with the federation; a member loads the received weights into
    this scratch copy instead.
    """

    def __init__(self, model_fn: ModelFn, device: str = "auto") -> None:
        self.model_fn = model_fn
        self.device = resolve_device(device)
        self._model: nn.Module | None = None

    def load(self, arrays: Mapping[str, np.ndarray]) -> nn.Module:
        if self._model is None:
            self._model = self.model_fn().to(self.device)
        set_arrays(self._model, arrays)
        return self._model


def initial_arrays(model_fn: ModelFn, seed: int) -> Arrays:
    """The run's initial model: the same seed gives every method the same starting point."""
    torch.manual_seed(derive_seed(seed, "init"))
    return get_arrays(model_fn())


def train_member(
    model: nn.Module, ctx: ClientContext, cfg: LocalTrainConfig, **kwargs: Any
) -> dict[str, float]:
    """Train ``model`` on the member's own training samples, with its seed for this round
    (``kwargs``: ``device``, ``loss_fn``, ``prox_mu``, ... of :func:`train_local`)."""
    data = ctx.data
    metrics = train_local(model, data.x, data.y, data.train_indices, cfg, ctx.seed, **kwargs)
    if cfg.dp_sgd and metrics["steps"]:
        metrics["dp_sgd_epsilon"] = account_dp_sgd(
            ctx.state, cfg, len(data.train_indices), int(metrics["steps"])
        )
    return metrics


def account_dp_sgd(
    state: dict[str, Any], cfg: LocalTrainConfig, num_samples: int, steps: int
) -> float:
    """Add a local run's DP-SGD steps to the member's own account (``state``, kept across
    rounds) and return its ε so far, at ``cfg.dp_sgd_delta``: the member's guarantee for
    each of its samples over every round it took part in."""
    rate = dp_sample_rate(cfg, num_samples)
    history: list[list[float]] = state.setdefault("dp_sgd_history", [])
    if history and history[-1][0] == cfg.dp_sgd_noise and history[-1][1] == rate:
        history[-1][2] += steps
    else:
        history.append([cfg.dp_sgd_noise, rate, steps])
    return privacy.epsilon_of(history, cfg.dp_sgd_delta)


def evaluate_member(model: nn.Module, ctx: ClientContext, device: Any) -> dict[str, float]:
    """Accuracy and loss on the member's own test view (only ``num_examples`` when empty)."""
    data = ctx.data
    metrics = evaluate(model, data.x, data.y, data.test_indices, device=device)
    return metrics if metrics["num_examples"] > 0 else {"num_examples": 0.0}


def supervised_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Handlers ``train`` (local epochs, optional proximal term) and ``evaluate`` (test view).

    ``ctx.data`` must offer ``x``, ``y``, ``train_indices`` and ``test_indices`` (a
    ``ClientData``).
    """
    app = ClientApp()
    scratch = ScratchModel(model_fn, device)

    @app.on("train")
    def train(msg: Message, ctx: ClientContext) -> Message:
        model = scratch.load(msg.arrays)
        cfg = LocalTrainConfig.from_config(msg.config)
        prox_mu = float(msg.config.get("prox_mu", 0.0))
        metrics = train_member(model, ctx, cfg, device=scratch.device, prox_mu=prox_mu)
        return msg.reply(arrays=get_arrays(model), metrics=metrics)

    @app.on("evaluate")
    def evaluate_local(msg: Message, ctx: ClientContext) -> Message:
        model = scratch.load(msg.arrays)
        return msg.reply(metrics=evaluate_member(model, ctx, scratch.device))

    return app


def evaluate_on_clients(
    grid: Grid, arrays: Arrays, clients: list[int] | None = None
) -> dict[int, dict[str, float]]:
    """Ask members to evaluate ``arrays`` on their own test views; metrics by member."""
    ids = grid.client_ids if clients is None else clients
    msg = Message("evaluate", arrays=arrays)
    replies = grid.send({c: msg for c in ids}, expect=ReplySpec({}))
    return {c: dict(r.metrics) for c, r in replies.items() if "accuracy" in r.metrics}


def client_accuracy_summary(per_client: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Mean, min and per-member test accuracy for a summary."""
    accs = {int(c): float(m["accuracy"]) for c, m in per_client.items() if "accuracy" in m}
    values = np.array(list(accs.values()), float)
    return {
        "client_accuracy": {str(c): a for c, a in sorted(accs.items())},
        "mean_client_accuracy": float(values.mean()) if values.size else None,
        "min_client_accuracy": float(values.min()) if values.size else None,
    }


def final_summary(
    evaluator: ServerEvaluator, grid: Grid, arrays: Arrays, evaluate_clients: bool
) -> dict[str, Any]:
    """A trained model's summary: server test metrics, and each member's own view's."""
    summary: dict[str, Any] = dict(evaluator(arrays))
    if evaluate_clients:
        summary.update(client_accuracy_summary(evaluate_on_clients(grid, arrays)))
    return summary


class ServerEvaluator:
    """Evaluates a model on a server-held split (the global test or validation set)."""

    def __init__(self, model_fn: ModelFn, x: np.ndarray, y: np.ndarray, device: str = "auto"):
        self.scratch = ScratchModel(model_fn, device)
        self.x, self.y = x, y

    def __call__(self, arrays: Mapping[str, np.ndarray], prefix: str = "test") -> dict[str, float]:
        if len(self.y) == 0:
            return {}
        model = self.scratch.load(arrays)
        m = evaluate(model, self.x, self.y, device=self.scratch.device)
        return {f"{prefix}_accuracy": m["accuracy"], f"{prefix}_loss": m["loss"]}


def add_standalone_handler(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``train_alone``: train from the received model, report own test metrics."""
    scratch = ScratchModel(model_fn, device)

    @app.on("train_alone")
    def train_alone(msg: Message, ctx: ClientContext) -> Message:
        model = scratch.load(msg.arrays)
        cfg = LocalTrainConfig.from_config(msg.config)
        data = ctx.data
        fit = train_member(model, ctx, cfg, device=scratch.device)
        test = evaluate(model, data.x, data.y, data.test_indices, device=scratch.device)
        metrics = {
            "train_loss": fit["train_loss"],
            "num_train": fit["num_examples"],
            "num_examples": test["num_examples"],
        }
        if test["num_examples"] > 0:
            metrics.update(accuracy=test["accuracy"], loss=test["loss"])
        arrays = get_arrays(model) if msg.config.get("return_model") else {}
        return msg.reply(arrays=arrays, metrics=metrics)

    return app


def standalone_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Supervised handlers plus ``train_alone``."""
    return add_standalone_handler(supervised_client_app(model_fn, device), model_fn, device)
