"""DMTRL as a workflow: W-step rounds of a primal-dual exchange, Ω-steps at the server.

Liu, Pan & Ho, *Distributed Multi-Task Relationship Learning*, KDD 2017 (arXiv 1612.04022),
as reconstructed in docs/methods/dmtrl.md from MTRL (Zhang & Yeung, UAI 2010) and CoCoA+/MOCHA.
One task per member. Each round:

1. the server sends member ``i`` its own model ``w_i`` (d floats);
2. the member reports its share of the primal and dual objectives at ``w_i`` (two scalars:
   its mean loss and its mean conjugate at ``α_i``) and its test statistics;
3. the member runs H SDCA steps on its local subproblem and sends ``Δu_i`` (d floats);
4. the server sets ``U ← U + γ ΔU`` and ``W = U K``; it forms primal, dual and duality gap
   from the scalars of step 2 (they describe the iterate the round started from: a member can
   only evaluate the ``w_i`` it was sent);
5. when the W-step is solved well enough (relative gap below tolerance) or ``omega_every``
   rounds have passed, the server takes an Ω-step (:mod:`.omega`: the closed form, Anderson-
   accelerated, the floor lowered in stages) and recomputes ``K`` and σ'. The dual variables
   do not depend on Ω, so the next W-step warm-starts from them: ``W ← U K_new``.

With ``λ1 = 0`` the scalars of step 2 and ``U`` also give a lower bound on the optimum of the
whole problem (:func:`~.omega.joint_dual_value`); the run ends (no more rounds) once
the relative gap to it is below ``joint_tolerance`` at the target floor: W and Ω are then
certified, whatever path the alternation took. Otherwise it ends once Ω has stopped moving
(``omega_tolerance``) and the W-step is solved (``gap_tolerance``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from consortium.algorithms.mtl.client import TRAIN
from consortium.algorithms.mtl.config import DMTRLConfig
from consortium.algorithms.mtl.evaluation import (
    evaluate_models,
    member_values,
    round_scores,
    task_scores,
)
from consortium.algorithms.mtl.objective import (
    coupling,
    dual_value,
    primal_value,
    sigma_bound,
)
from consortium.algorithms.mtl.omega import OmegaSteps, joint_dual_value, relative_gap
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ArraySpec, ReplySpec
from consortium.core.workflow import Workflow
from consortium.metrics.mtl import correlation_from_covariance, sign_agreement


def correlation_summary(omega: np.ndarray, true: np.ndarray | None) -> dict[str, float]:
    """How well the learned task correlation matches a known one (synthetic data)."""
    if true is None:
        return {}
    corr = correlation_from_covariance(omega)
    off = ~np.eye(len(true), dtype=bool)
    a, b = corr[off], true[off]
    pearson = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {
        "correlation_sign_agreement": sign_agreement(corr, true),
        "correlation_pearson": pearson,
    }


def model_arrays(w: np.ndarray, omega: np.ndarray, true: np.ndarray | None) -> Arrays:
    """What a multi-task run saves: W, Ω, the learned task correlation (and the true one)."""
    arrays = {"W": w, "Omega": omega, "task_correlation": correlation_from_covariance(omega)}
    if true is not None:
        arrays["true_correlation"] = np.asarray(true, np.float64)
    return arrays


class DMTRL(Workflow):
    """Distributed multi-task relationship learning (primal-dual, parameter-server style).

    Members run :func:`~consortium.algorithms.mtl.client.mtl_client_app`.

    Parameters
    ----------
    config
        See :class:`~consortium.algorithms.mtl.config.DMTRLConfig`.
    dim
        Number of features ``d`` (shared by all tasks).
    kind
        ``"regression"`` or ``"classification"``: which scores the members report.
    true_correlation
        The task correlation the data was generated from, when known: the summary then says
        how well the learned one matches it, and it is saved with the model for plots.
    info
        Entries copied into the summary as they are (e.g. how λ was chosen).
    """

    name = "dmtrl"
    progress_keys = ("relative_gap", "mean_rmse", "test_accuracy")

    def __init__(
        self,
        config: DMTRLConfig,
        dim: int,
        kind: Literal["regression", "classification"] = "regression",
        true_correlation: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.config = config.resolved(kind)
        self.num_rounds = config.rounds
        self.dim = dim
        self.kind = kind
        self.true_correlation = true_correlation
        self.info = dict(info or {})
        self.u = np.zeros((dim, 0))
        self.omega = np.zeros((0, 0))
        self.k = np.zeros((0, 0))
        self.metric = np.zeros((0, 0))
        self.gamma = 1.0
        self.sigma = 1.0
        self.applied: dict[int, int] = {}
        self.phase_rounds = 0
        self.omega_steps = 0
        self.omega_converged = False
        self.last_change = 1.0
        self.converged_round: int | None = None
        self.history: list[tuple[int, float | None, int]] = []
        # The joint gap certifies the optimum when λ1 = 0 and Ω is free to move.
        cfg = self.config
        self.certified = cfg.lambda1 == 0 and cfg.omega_updates is None
        start = cfg.continuation_start if self.certified else None
        self.steps = OmegaSteps(cfg.omega_floor, cfg.acceleration, start)
        self.step_kinds: dict[str, int] = {"plain": 0, "extrapolated": 0, "rejected": 0}

    # --- server-side algebra ---------------------------------------------------------------

    def _set_omega(self, omega: np.ndarray) -> None:
        """Take Ω and recompute what depends on it: K, M and σ'."""
        cfg = self.config
        m = omega.shape[0]
        self.omega = omega
        self.k, self.metric = coupling(omega, cfg.lambda1, cfg.lambda2)
        self.gamma = 1.0 if cfg.aggregation == "add" else 1.0 / m
        if isinstance(cfg.sigma, str):
            self.sigma = self.gamma * sigma_bound(self.k, cfg.sigma)
        else:
            self.sigma = float(cfg.sigma)

    @property
    def w(self) -> np.ndarray:
        """The task models ``W = U K`` (``d × m``)."""
        return self.u @ self.k

    # --- the workflow ----------------------------------------------------------------------

    def setup(self, grid: Grid) -> dict[str, Any]:
        m = grid.num_clients
        self.u = np.zeros((self.dim, m))
        self._set_omega(np.eye(m) / m)
        self.omega_converged = self.config.omega_updates == 0
        return {}

    @property
    def should_stop(self) -> bool:
        """Converged (certified, or Ω settled and the W-step solved): no more rounds."""
        return self.converged_round is not None

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        m = grid.num_clients
        w = self.w
        # 1. Member i gets w_i only, and the scalars of its local subproblem.
        shared = {
            "loss": cfg.loss,
            "local_passes": cfg.local_passes,
            "local_steps": cfg.local_steps or 0,
            "gamma": self.gamma,
            "round": rnd,
        }
        msgs = {
            c: Message(
                TRAIN,
                arrays={"w": np.ascontiguousarray(w[:, c])},
                config={
                    **shared,
                    "scale": self.sigma * float(self.k[c, c]),
                    "applied": self.applied.get(c, -1),
                },
            )
            for c in grid.client_ids
        }
        spec = ReplySpec({"delta_u": ArraySpec((self.dim,), np.dtype(np.float64))})
        replies = grid.send(msgs, expect=spec)

        # 2. Primal, dual and gaps of the iterate this round started from.
        metrics: dict[str, Any] = {"omega_steps": self.omega_steps, "sigma": self.sigma}
        losses = member_values(replies, "loss_mean", m)
        conjugates = member_values(replies, "conjugate_mean", m)
        rel_gap = primal = joint = None
        new_stage = False
        if losses is not None and conjugates is not None:
            primal = primal_value(losses, w, self.metric)
            dual = dual_value(conjugates, self.u, self.k)
            rel_gap = (primal - dual) / max(abs(primal), 1e-300)
            metrics.update(
                primal=primal,
                dual=dual,
                duality_gap=primal - dual,
                relative_gap=rel_gap,
                train_loss=float(losses.sum()),
            )
            if self.certified:
                floor = self.steps.floor
                joint = relative_gap(primal, self.joint_lower_bound(conjugates, floor))
                metrics.update(joint_gap=joint, omega_floor=floor)
                if self.steps.final_stage and joint <= cfg.joint_tolerance:
                    # Certified: keep the pair this round started from (members discard the
                    # updates of this round, which the server never applies).
                    self.converged_round, self.omega_converged = rnd, True
                    metrics["converged"] = True
                    metrics.update(round_scores(task_scores(replies, self.kind)))
                    self.history.append((rnd, rel_gap, self.omega_steps))
                    return metrics
                if not self.steps.final_stage and joint <= cfg.stage_tolerance:
                    self.steps.lower_floor()
                    new_stage = True
        metrics.update(round_scores(task_scores(replies, self.kind)))

        # 3. Apply the updates that arrived (the members commit them on the next message).
        for c, reply in replies.items():
            self.u[:, c] += self.gamma * reply.arrays["delta_u"]
            self.applied[c] = rnd
        self.phase_rounds += 1
        self.history.append((rnd, rel_gap, self.omega_steps))

        # 4. Ω-step when the W-step is solved or has run omega_every rounds; else maybe done.
        tolerance = self.w_step_tolerance
        solved = rel_gap is not None and rel_gap <= tolerance
        # How well the W-step must be solved before an Ω-step: relative to the whole problem's
        # gap when it is known (the W-step's part of it small), else to the last ΔΩ.
        rough = self.last_change if joint is None else joint
        target = max(tolerance, cfg.inexact * rough)
        roughly = rel_gap is not None and rel_gap <= target
        may_update = not self.omega_converged
        if may_update and (roughly or new_stage or self.phase_rounds >= cfg.omega_every):
            objective = primal if roughly else None  # the safeguard needs a solved W-step
            new, change, how = self.steps.step(self.omega, self.w, objective)
            self._set_omega(new)
            self.omega_steps += 1
            self.step_kinds[how] += 1
            self.phase_rounds = 0
            capped = cfg.omega_updates is not None and self.omega_steps >= cfg.omega_updates
            if not self.certified:
                self.omega_converged = change <= cfg.omega_tolerance or capped
            self.last_change = change
            metrics.update(omega_step=True, omega_change=change, omega_step_kind=how)
        elif not may_update and solved:
            self.converged_round = rnd
            metrics["converged"] = True
        return metrics

    @property
    def w_step_tolerance(self) -> float:
        """Relative gap of a solved W-step: ``gap_tolerance``, and a tenth of the joint
        tolerance when the joint gap decides (the joint gap is never below the W-step's)."""
        cfg = self.config
        if self.certified:
            return min(cfg.gap_tolerance, 0.1 * cfg.joint_tolerance)
        return cfg.gap_tolerance

    def joint_lower_bound(self, conjugates: np.ndarray, floor: float) -> float:
        """A lower bound on the optimum of the whole problem at floor ``floor``, from the
        members' conjugates and the server's ``U`` (the same α)."""
        return joint_dual_value(float(conjugates.sum()), self.u, floor, self.config.lambda2)

    def finish(self, grid: Grid) -> dict[str, Any]:
        cfg = self.config
        m = grid.num_clients
        w = self.w
        extra = {c: {"applied": self.applied.get(c, -1)} for c in grid.client_ids}
        replies = evaluate_models(grid, w, cfg.loss, extra)
        summary: dict[str, Any] = task_scores(replies, self.kind)
        losses = member_values(replies, "loss_mean", m)
        conjugates = member_values(replies, "conjugate_mean", m)
        if losses is not None and conjugates is not None:
            primal = primal_value(losses, w, self.metric)
            dual = dual_value(conjugates, self.u, self.k)
            summary.update(
                objective=primal,
                primal=primal,
                dual=dual,
                duality_gap=primal - dual,
                relative_gap=(primal - dual) / max(abs(primal), 1e-300),
            )
            if self.certified:
                lower = self.joint_lower_bound(conjugates, cfg.omega_floor)
                summary["joint_gap"] = relative_gap(primal, lower)
        summary.update(
            omega_steps=self.omega_steps,
            omega_step_kinds=dict(self.step_kinds),
            omega_converged=self.omega_converged,
            converged_round=self.converged_round,
            rounds_to_gap=self.rounds_to_gap(cfg.gap_tolerance),
        )
        summary.update(correlation_summary(self.omega, self.true_correlation))
        summary.update(self.info)
        return summary

    def rounds_to_gap(self, tolerance: float) -> int | None:
        """Rounds of updates the first W-step (Ω = I/m) took to reach a relative duality gap
        of ``tolerance`` (``None``: not reached before the first Ω-step)."""
        for rnd, gap, steps in self.history:
            if steps > 0:
                return None
            if gap is not None and gap <= tolerance:
                return rnd - 1  # the gap logged in round r is that of the state after r - 1
        return None

    def final_arrays(self) -> Arrays:
        return model_arrays(self.w, self.omega, self.true_correlation)

    def state_dict(self) -> dict[str, Any]:
        return {
            "u": self.u.copy(),
            "omega": self.omega.copy(),
            "k": self.k.copy(),
            "metric": self.metric.copy(),
            "gamma": self.gamma,
            "sigma": self.sigma,
            "applied": dict(self.applied),
            "phase_rounds": self.phase_rounds,
            "omega_steps": self.omega_steps,
            "omega_converged": self.omega_converged,
            "last_change": self.last_change,
            "converged_round": self.converged_round,
            "history": list(self.history),
            "steps": self.steps.state_dict(),
            "step_kinds": dict(self.step_kinds),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.u = np.array(state["u"], copy=True)
        self.omega = np.array(state["omega"], copy=True)
        self.k = np.array(state["k"], copy=True)
        self.metric = np.array(state["metric"], copy=True)
        self.gamma = float(state["gamma"])
        self.sigma = float(state["sigma"])
        self.applied = {int(k): int(v) for k, v in state["applied"].items()}
        self.phase_rounds = int(state["phase_rounds"])
        self.omega_steps = int(state["omega_steps"])
        self.omega_converged = bool(state["omega_converged"])
        self.last_change = float(state["last_change"])
        self.converged_round = state["converged_round"]
        self.history = list(state["history"])
        self.steps.load_state_dict(state["steps"])
        self.step_kinds = {k: int(v) for k, v in state["step_kinds"].items()}
