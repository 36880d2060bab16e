"""Member side of DMTRL and its references: three handlers on the member's own task.

* ``dmtrl_train``: receive ``w_i``, report this member's pieces of the primal and dual and its
  test statistics at ``w_i``, run H local SDCA steps, send ``Δu_i`` (d floats). The dual
  variables ``α_i`` stay in the member's state and never leave it.
* ``mtl_evaluate``: score a received ``w_i`` on the member's data (final evaluation of every
  method).
* ``mtl_fit_alone``: single-task learning: fit the member's own model, report its scores.

A member's update is committed in two phases. It keeps ``α_i`` and, separately, the pending
change of the last round; the next message says which round's ``Δu_i`` the server applied, and
only then is the pending change added to ``α_i``. A reply that was lost, rejected or belonged
to a skipped round is thus dropped on both sides, so ``U = [X_i α_i / n_i]`` holds exactly
whatever the network did.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from consortium.algorithms.mtl.objective import local_sdca, predict, task_pieces
from consortium.algorithms.mtl.solvers import fit_single_task
from consortium.core.client import ClientApp, ClientContext
from consortium.core.message import Message
from consortium.data.multitask import TaskData
from consortium.metrics.mtl import ClassificationStats, RegressionStats

TRAIN = "dmtrl_train"
EVALUATE = "mtl_evaluate"
FIT_ALONE = "mtl_fit_alone"


def score_statistics(task: TaskData, w: np.ndarray) -> dict[str, float]:
    """Sufficient statistics of ``w``'s test predictions (sums only, no samples)."""
    z = task.x_test @ w
    if task.kind == "classification":  # a least-squares classifier predicts by sign too
        y_hat = predict("hinge", z)
        return ClassificationStats.from_predictions(task.y_test, y_hat).as_metrics()
    stats = RegressionStats.from_predictions(task.to_original(task.y_test), task.to_original(z))
    return stats.as_metrics()


def _committed_alpha(state: dict[str, Any], applied: int, n: int) -> np.ndarray:
    """The member's dual variables after committing the pending change the server applied."""
    alpha = state.get("alpha")
    if alpha is None:
        alpha = np.zeros(n)
    pending = state.pop("pending", None)
    if pending is not None and state.pop("pending_round", None) == applied:
        alpha = alpha + pending
    state.pop("pending_round", None)
    state["alpha"] = alpha
    return alpha


def mtl_client_app() -> ClientApp:
    """Handlers of every multi-task method (DMTRL, centralised MTRL, single-task, global)."""
    app = ClientApp()

    @app.on(TRAIN)
    def train(msg: Message, ctx: ClientContext) -> Message:
        task: TaskData = ctx.data
        cfg = msg.config
        loss = str(cfg["loss"])
        w = msg.arrays["w"]
        n = task.num_train
        alpha = _committed_alpha(ctx.state, int(cfg["applied"]), n)
        # 1. This member's share of P and D at the iterate the round starts from.
        metrics: dict[str, float] = task_pieces(task.x_train, task.y_train, w, alpha, loss)
        metrics.update(score_statistics(task, w))
        # 2. H local SDCA steps on the member's subproblem (seeded by round and member).
        steps = int(cfg["local_steps"]) or max(1, math.ceil(float(cfg["local_passes"]) * n))
        rng = np.random.default_rng(ctx.seed)
        delta_alpha, delta_u = local_sdca(
            task.x_train, task.y_train, alpha, w, float(cfg["scale"]), steps, rng, loss
        )
        # 3. Keep Δα pending until the server confirms it applied Δu; send Δu only.
        ctx.state["pending"] = float(cfg["gamma"]) * delta_alpha
        ctx.state["pending_round"] = int(cfg["round"])
        return msg.reply(arrays={"delta_u": delta_u}, metrics=metrics)

    @app.on(EVALUATE)
    def evaluate(msg: Message, ctx: ClientContext) -> Message:
        task: TaskData = ctx.data
        loss = str(msg.config["loss"])
        w = msg.arrays["w"]
        alpha = None
        if "applied" in msg.config and ("alpha" in ctx.state or "pending" in ctx.state):
            alpha = _committed_alpha(ctx.state, int(msg.config["applied"]), task.num_train)
        metrics = task_pieces(task.x_train, task.y_train, w, alpha, loss)
        metrics.update(score_statistics(task, w))
        return msg.reply(metrics=metrics)

    @app.on(FIT_ALONE)
    def fit_alone(msg: Message, ctx: ClientContext) -> Message:
        task: TaskData = ctx.data
        loss = str(msg.config["loss"])
        w = fit_single_task(task.x_train, task.y_train, loss, float(msg.config["lam"]))
        metrics = task_pieces(task.x_train, task.y_train, w, None, loss)
        metrics["objective"] = metrics["loss_mean"] + 0.5 * float(msg.config["lam"]) * float(w @ w)
        metrics.update(score_statistics(task, w))
        return msg.reply(metrics=metrics)

    return app
