"""Centralised MTRL: the same objective as DMTRL, solved on the pooled data to high precision.

The reference DMTRL must converge to (Liu, Pan & Ho, KDD 2017; docs/methods/dmtrl.md: the
distributed solution equals the centralised MTRL solution, same λ's, to solver tolerance).
Pooling is exactly what members refuse, so this is a simulation-only reference: the workflow
receives every task's training arrays in its constructor, solves on the server in round 1 (no
communication), and in ``finish`` sends each member its model for scoring, the same way
DMTRL's models are scored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from consortium.algorithms.mtl.dmtrl import correlation_summary, model_arrays
from consortium.algorithms.mtl.evaluation import OneShot, evaluate_models, task_scores
from consortium.algorithms.mtl.solvers import alternation, fit_mtrl
from consortium.core.grid import Grid
from consortium.core.message import Arrays


class CentralisedMTRL(OneShot):
    """Alternating exact W-steps and closed-form Ω-steps on the pooled data (Zhang & Yeung).

    ``config`` is an :class:`~consortium.algorithms.mtl.config.MTRLConfig`; ``true_correlation``
    the known task correlation (synthetic data) for the summary and the plots; the rest as
    :class:`~consortium.algorithms.mtl.evaluation.OneShot`.
    """

    name = "mtrl_centralised"

    def __init__(self, *args: Any, true_correlation: np.ndarray | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.true_correlation = true_correlation

    def reset(self) -> None:
        self.w: np.ndarray | None = None
        self.omega: np.ndarray | None = None
        self.solve: dict[str, Any] = {}

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        if len(self.train_sets) != grid.num_clients:
            raise ValueError(f"{len(self.train_sets)} training sets for {grid.num_clients} members")
        t0 = time.perf_counter()
        sol = fit_mtrl(
            self.train_sets,
            cfg.loss,
            cfg.lambda1,
            cfg.lambda2,
            floor=cfg.omega_floor,
            tol=cfg.tolerance,
            max_outer=cfg.max_outer,
            **alternation(cfg),
        )
        self.w, self.omega = sol.w, sol.omega
        self.solve = {
            "objective": sol.objective,
            "outer_iterations": sol.outer_iterations,
            "omega_steps": sol.outer_iterations,
            "omega_change": sol.omega_change,
            "joint_gap": sol.joint_gap,
            "converged": sol.converged,
            "solve_time_s": time.perf_counter() - t0,
        }
        return dict(self.solve)

    def finish(self, grid: Grid) -> dict[str, Any]:
        if self.w is None or self.omega is None:
            return {}
        summary = task_scores(evaluate_models(grid, self.w, self.config.loss), self.kind)
        summary.update(self.solve)
        summary.update(correlation_summary(self.omega, self.true_correlation))
        summary.update(self.info)
        return summary

    def final_arrays(self) -> Arrays | None:
        if self.w is None or self.omega is None:
            return None
        return model_arrays(self.w, self.omega, self.true_correlation)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w, "omega": self.omega, "solve": dict(self.solve)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.w, self.omega = state["w"], state["omega"]
        self.solve = dict(state["solve"])
