"""The two references without task relationships: each member alone, and one model for all.

* :class:`SingleTask` (each member alone): one round in which every member fits its own ridge
  regression or linear SVM on its own data and reports its test statistics. Nothing but those
  sums leaves the member, not even its model.
* :class:`GlobalModel` (one model for every task): the same loss with all ``w_i`` tied, fitted
  on the pooled data at the server (simulation-only, like centralised MTRL), then sent to every
  member for scoring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from consortium.algorithms.mtl.client import FIT_ALONE
from consortium.algorithms.mtl.evaluation import OneShot, evaluate_models, task_scores
from consortium.algorithms.mtl.solvers import fit_global
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec

TaskKind = Literal["regression", "classification"]


class SingleTask(OneShot):
    """Single-task learning: ``min_w (1/n_i) Σ ℓ + (λ/2)‖w‖²`` at every member, alone, with
    the same loss and λ (a :class:`~consortium.algorithms.mtl.config.SingleModelConfig`) for
    every member; parameters as :class:`~consortium.algorithms.mtl.evaluation.OneShot`."""

    name = "single_task"
    progress_keys = ("mean_rmse", "mean_client_accuracy")

    def reset(self) -> None:
        self.replies: dict[int, Message] = {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        msg = Message(FIT_ALONE, config={"loss": self.config.loss, "lam": self.config.lam})
        self.replies = grid.send({c: msg for c in grid.client_ids}, expect=ReplySpec({}))
        objective = sum(r.metrics["objective"] for r in self.replies.values())
        return {"objective": objective, **task_scores(self.replies, self.kind)}

    def finish(self, grid: Grid) -> dict[str, Any]:
        summary = task_scores(self.replies, self.kind)
        summary["objective"] = sum(r.metrics["objective"] for r in self.replies.values())
        summary.update(self.info)
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {"replies": dict(self.replies)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.replies = dict(state["replies"])


class GlobalModel(OneShot):
    """One model for all tasks: ``min_w Σ_i (1/n_i) Σ_j ℓ(y_ij, wᵀx_ij) + (λ/2)‖w‖²``, on the
    tasks' ``train_sets`` pooled at the server; parameters as
    :class:`~consortium.algorithms.mtl.evaluation.OneShot`."""

    name = "global_model"

    def reset(self) -> None:
        self.w: np.ndarray | None = None
        self.solve: dict[str, Any] = {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.w = fit_global(self.train_sets, self.config.loss, self.config.lam)
        self.solve = {"solve_time_s": time.perf_counter() - t0}
        return dict(self.solve)

    def finish(self, grid: Grid) -> dict[str, Any]:
        if self.w is None:
            return {}
        tiled = np.repeat(self.w[:, None], grid.num_clients, axis=1)
        summary = task_scores(evaluate_models(grid, tiled, self.config.loss), self.kind)
        summary.update(self.solve)
        summary.update(self.info)
        return summary

    def final_arrays(self) -> Arrays | None:
        return None if self.w is None else {"w": self.w}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w, "solve": dict(self.solve)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.w = state["w"]
        self.solve = dict(state["solve"])
