"""SCAFFOLD's member side: local steps with the drift correction ``c - c_i``.

A member keeps its control variate ``c_i`` in its own state (``ctx.state``); it never leaves the
member except as the change ``Δc_i`` the server needs for ``c``. The correction enters the
local objective as the linear term ``<c - c_i, y>``, whose gradient is exactly ``c - c_i``, so
the shared training loop (``consortium.training``) runs unchanged.

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
from consortium.training import LocalTrainConfig, cross_entropy

#: Prefix of the control-variate arrays in messages (the model's names follow it).
CONTROL = "control/"


def split(arrays: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
    """(model arrays, control arrays without the prefix) of a message."""
    model = {k: v for k, v in arrays.items() if not k.startswith(CONTROL)}
    control = {k[len(CONTROL) :]: v for k, v in arrays.items() if k.startswith(CONTROL)}
    return model, control


def corrected_loss(model: nn.Module, correction: Mapping[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """Cross-entropy plus ``<c - c_i, y>``: its gradient is the corrected gradient."""
    params = dict(model.named_parameters())

    def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(m, xb, yb)
        for name, delta in correction.items():
            loss = loss + (params[name] * delta).sum()
        return loss

    return loss_fn


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
        correction = {k: torch.from_numpy(c[k] - c_i[k]).to(dev) for k in c}
        cfg = LocalTrainConfig.from_config(msg.config)
        loss_fn = corrected_loss(model, correction)
        metrics = train_member(model, ctx, cfg, device=dev, loss_fn=loss_fn)
        trained = get_arrays(model)
        steps = max(int(metrics.get("steps", 0)), 1)
        # Option II: c_i+ = c_i - c + (x - y_i) / (K·η_l).
        scale = 1.0 / (steps * cfg.lr)
        new_c_i = {
            k: (c_i[k] - c[k] + (weights[k] - trained[k]) * scale).astype(c[k].dtype) for k in c
        }
        ctx.state["pending"] = {"round": ctx.round, "c_i": new_c_i}
        if "c_i" not in ctx.state:
            ctx.state["c_i"] = c_i
        delta_c = {CONTROL + k: new_c_i[k] - c_i[k] for k in c}
        return msg.reply(arrays={**trained, **delta_c}, metrics=metrics)

    return app


def scaffold_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Supervised handlers (``evaluate``) plus ``scaffold_train``."""
    return add_scaffold_handler(supervised_client_app(model_fn, device), model_fn, device)
