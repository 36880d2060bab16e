"""SCAFFOLD's member side: local steps with the drift correction ``c - c_i``.

A member keeps its control variate ``c_i`` in its own state (``ctx.state``); it never leaves the
member except as the change ``Δc_i`` the server needs for ``c``. The correction enters the
local objective as the linear term ``<c - c_i, y>``, whose gradient is exactly ``c - c_i``, so
the shared training loop (``consortium.training``) runs unchanged. The term is added with its
value cancelled (``t - t.detach()``), so the loss the loop reports (``train_loss``) is the plain
cross-entropy, not the surrogate, whose linear part is unbounded below.

The correction applies to the trainable parameters only; a float buffer (a normalisation
layer's running statistics) is not descended on, so its control stays zero.

A member takes the K steps the message asks for (``local_steps``, the same K for every member,
as in Algorithm 1; 0: ``epochs`` passes over its data) and sets option II's
``c_i+ = c_i - c + (x - y_i)/(K·η_l)`` with K the steps it actually took.

A new ``c_i`` is *pending* until the server confirms it used the reply: the next training
message carries the round the server last accepted from this member, and only then is the
pending value committed. A dropped or rejected reply therefore leaves ``c_i`` as the server
believes it to be (the same commit rule DMTRL uses for its dual variables).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from consortium.algorithms.base.supervised import (
    ModelFn,
    ScratchModel,
    supervised_client_app,
    train_member,
)
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Arrays, Message
from consortium.models.weights import get_arrays
from consortium.training import (
    LocalTrainConfig,
    LossFn,
    batch_order,
    cross_entropy,
    train_batches,
)

#: Prefix of the control-variate arrays in messages (the model's names follow it).
CONTROL = "control/"


def split(arrays: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
    """(model arrays, control arrays without the prefix) of a message."""
    model = {k: v for k, v in arrays.items() if not k.startswith(CONTROL)}
    control = {k[len(CONTROL) :]: v for k, v in arrays.items() if k.startswith(CONTROL)}
    return model, control


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters local steps move (the only ones a control variate corrects)."""
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def corrected_loss(model: nn.Module, correction: Mapping[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """Cross-entropy whose gradient carries ``+ (c - c_i)``: the linear term ``<c - c_i, y>``
    is added as ``t - t.detach()``, so the value (and the reported ``train_loss``) is the
    cross-entropy alone while the gradient is the corrected one."""
    params = trainable(model)
    pairs = [(params[k], d) for k, d in correction.items() if k in params]

    def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(m, xb, yb)
        if pairs:
            linear = torch.stack([(p * d).sum() for p, d in pairs]).sum()
            loss = loss + (linear - linear.detach())
        return loss

    return loss_fn


def local_steps(
    model: nn.Module,
    ctx: ClientContext,
    cfg: LocalTrainConfig,
    steps: int,
    device: torch.device,
    loss_fn: LossFn,
) -> dict[str, float]:
    """``steps`` optimiser steps on the member's samples (reshuffled passes, the last one cut
    short; the batch order of :func:`~consortium.training.train_local` with the member's seed),
    or ``cfg.epochs`` whole passes when ``steps`` is 0. Metrics as ``train_local``'s."""
    if steps <= 0:
        return train_member(model, ctx, cfg, device=device, loss_fn=loss_fn)
    data = ctx.data
    indices = np.asarray(data.train_indices)
    if len(indices) == 0:
        return {"train_loss": 0.0, "num_examples": 0.0, "steps": 0}
    passes = -(-steps // -(-len(indices) // cfg.batch_size))
    batches = batch_order(indices, cfg.batch_size, ctx.seed, passes)[:steps]
    torch.manual_seed(ctx.seed)
    metrics = train_batches(model, data.x, data.y, batches, cfg, device=device, loss_fn=loss_fn)
    metrics["num_examples"] = float(len(indices))
    return metrics


def add_scaffold_handler(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``scaffold_train`` on ``app``."""
    scratch = ScratchModel(model_fn, device)

    @app.on("scaffold_train")
    def scaffold_train(msg: Message, ctx: ClientContext) -> Message:
        weights, c = split(msg.arrays)
        pending = ctx.state.get("pending")
        if pending is not None and pending["round"] == int(msg.config.get("accepted_round", -1)):
            ctx.state["c_i"] = pending["c_i"]  # the server used that reply: commit it
        ctx.state.pop("pending", None)
        c_i: Arrays = ctx.state.get("c_i") or {k: np.zeros_like(v) for k, v in c.items()}
        model = scratch.load(weights)
        dev = scratch.device
        params = trainable(model)
        correction = {k: torch.from_numpy(c[k] - c_i[k]).to(dev) for k in c if k in params}
        cfg = LocalTrainConfig.from_config(msg.config)
        loss_fn = corrected_loss(model, correction)
        metrics = local_steps(model, ctx, cfg, int(msg.config.get("local_steps", 0)), dev, loss_fn)
        trained = get_arrays(model)
        new_c_i: Arrays = {}
        for k in c:
            if k not in params:  # not descended on: no drift to correct
                new_c_i[k] = np.zeros_like(c[k])
            else:  # option II: c_i+ = c_i - c + (x - y_i) / (K·η_l), K the steps taken
                scale = 1.0 / (max(int(metrics.get("steps", 0)), 1) * cfg.lr)
                step = (weights[k] - trained[k]) * scale
                new_c_i[k] = (c_i[k] - c[k] + step).astype(c[k].dtype)
        ctx.state["pending"] = {"round": ctx.round, "c_i": new_c_i}
        if "c_i" not in ctx.state:
            ctx.state["c_i"] = c_i
        delta_c = {CONTROL + k: new_c_i[k] - c_i[k] for k in c}
        return msg.reply(arrays={**trained, **delta_c}, metrics=metrics)

    return app


def scaffold_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Supervised handlers (``evaluate``) plus ``scaffold_train``."""
    return add_scaffold_handler(supervised_client_app(model_fn, device), model_fn, device)
