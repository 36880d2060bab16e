"""Members that keep their own model: the member side of CGSV and IAFL.

In both baselines every member holds a model of its own that the server never replaces
(except IAFL's optional resets): each round it trains a copy, sends the *update*, reverts,
and then adds the reward update the server sends back. The model lives in the member's state
(``ctx.state["model"]``), so the server holds no model per member and a checkpoint of the
runtime holds every member's model.

One handler, registered as ``own_train`` (train and send the update) and ``own_reward``
(apply a reward, optionally evaluate and return the model); its config says what to do:

* ``mode``: ``set`` (the arrays *are* the new model: initialisation, IAFL's reset), ``add``
  (add the arrays, a reward update, to the model) or ``keep``;
* ``train``: train a copy for the configured local epochs and reply its update ``Δ``,
  rescaled to norm ``gamma`` when ``gamma > 0`` (CGSV's normalised updates);
* ``evaluate``: report the model's accuracy on the member's own test view;
* ``return_model``: send the model back (simulation-only: the server scores it on its test set).
"""

from __future__ import annotations

import math

import numpy as np

from consortium.algorithms.base.supervised import (
    ModelFn,
    ScratchModel,
    add_standalone_handler,
    evaluate_member,
    supervised_client_app,
    train_member,
)
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Arrays, Message
from consortium.models.weights import get_arrays
from consortium.training import LocalTrainConfig


def rescale(delta: Arrays, gamma: float) -> Arrays:
    """``Γ · Δ / ‖Δ‖`` over all float entries (CGSV's normalised update; ``‖Δ‖ + 1e-7``)."""
    norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values()))
    scale = gamma / (norm + 1e-7)
    return {k: (v * scale).astype(v.dtype, copy=False) for k, v in delta.items()}


def add_own_model_handlers(app: ClientApp, model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Register ``own_train`` and ``own_reward`` (one handler) on ``app``."""
    scratch = ScratchModel(model_fn, device)

    def own_model(msg: Message, ctx: ClientContext) -> Message:
        mode = str(msg.config.get("mode", "keep"))
        model: Arrays | None = ctx.state.get("model")
        if mode == "set":
            model = {k: np.array(v, copy=True) for k, v in msg.arrays.items()}
        elif model is None:
            raise RuntimeError(f"member {ctx.client_id} has no model yet (mode {mode!r})")
        elif mode == "add":
            model = {
                k: (v + msg.arrays[k]).astype(v.dtype) if k in msg.arrays else v
                for k, v in model.items()
            }
        elif mode != "keep":
            raise ValueError(f"unknown mode {mode!r}")
        ctx.state["model"] = model
        arrays: Arrays = {}
        metrics: dict[str, float] = {}
        if msg.config.get("train", False):
            net = scratch.load(model)
            cfg = LocalTrainConfig.from_config(msg.config)
            metrics.update(train_member(net, ctx, cfg, device=scratch.device))
            trained = get_arrays(net)
            arrays = {k: trained[k] - model[k] for k in model if model[k].dtype.kind == "f"}
            gamma = float(msg.config.get("gamma", 0.0))
            if gamma > 0:
                arrays = rescale(arrays, gamma)
        if msg.config.get("evaluate", False):
            net = scratch.load(model)
            m = evaluate_member(net, ctx, scratch.device)
            metrics["num_test"] = m["num_examples"]
            if "accuracy" in m:
                metrics["accuracy"] = m["accuracy"]
        if msg.config.get("return_model", False):
            arrays = dict(model)
        return msg.reply(arrays=arrays, metrics=metrics)

    app.on("own_train")(own_model)
    app.on("own_reward")(own_model)
    return app


def describe_handler(app: ClientApp) -> ClientApp:
    """Register ``describe``: the member's number of training samples (a data-size
    contribution, asked for when no standalone phase ran)."""

    @app.on("describe")
    def describe(msg: Message, ctx: ClientContext) -> Message:
        return msg.reply(metrics={"num_train": float(len(ctx.data.train_indices))})

    return app


def own_model_client_app(model_fn: ModelFn, device: str = "auto") -> ClientApp:
    """Members of CGSV and IAFL: supervised handlers, ``train_alone``, ``describe`` and the
    own-model handlers ``own_train`` / ``own_reward``."""
    app = add_standalone_handler(supervised_client_app(model_fn, device), model_fn, device)
    return add_own_model_handlers(describe_handler(app), model_fn, device)
