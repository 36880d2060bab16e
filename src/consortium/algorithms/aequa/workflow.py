"""Aequa as a workflow: train one slimmable model, then give each member the width it earned.

Tastan, Horváth, Nandakumar. *Aequa: Fair Model Rewards in Collaborative Learning via
Slimmable Networks.* ICML 2025 (arXiv 2502.04850); the algorithm as reconstructed in
docs/methods/aequa.md.

0. Set-up: members train alone once (standalone accuracies: a contribution measure and the
   baseline of IPR) or report their data sizes, as the contribution measure needs.
1. Rounds (Algorithm 1): every sampled member trains the full slimmable model; on each batch
   the loss of the full width plus that of randomly drawn narrower widths (shared weights).
   Every member trains every weight, so the server averages with plain FedAvg.
   With CGSV-style contributions, each update's cosine with the aggregate is tracked.
2. Finish (post-training allocation, "Eq. 3" as reconstructed): accuracy-vs-width curve on
   the server's validation split, made monotone; contributions → target accuracies → widths;
   each member receives its width-``p_i`` sub-model (smaller tensors, cut from the full
   model) and scores it on its own test view. The server scores each reward width on its test
   set for the fairness summary.

The full-width model is the run's model (``test_accuracy``); members are assumed to train it
inside a TEE and to keep only their reward (docs/methods/aequa.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from consortium.algorithms.aequa.allocation import Allocation, accuracy_curve, allocate, width_grid
from consortium.algorithms.aequa.config import AequaConfig
from consortium.algorithms.aequa.evaluator import WidthEvaluator
from consortium.algorithms.base.supervised import ModelFn
from consortium.algorithms.base.workflow import Averaging, broadcast, send_chunked
from consortium.algorithms.fairness import CosineContribution, reward_summary, subtract
from consortium.algorithms.fairness.workflow import FairRewardWorkflow
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec
from consortium.models.slimmable import require_slimmable

log = logging.getLogger("consortium.aequa")


class Aequa(Averaging, FairRewardWorkflow[AequaConfig]):
    """Aequa with post-training model rewards (Algorithm 1 + allocation).

    Members run :func:`~consortium.algorithms.aequa.client.aequa_client_app`; the parameters
    are :class:`~consortium.algorithms.fairness.workflow.FairRewardWorkflow`'s, with a
    slimmable ``model_fn`` (``slim_cnn``, ``slim_resnet18``, ...). The accuracy-vs-width curve
    is measured on the server's validation split, which must not be empty: rewards fitted on
    the test set would be judged on the data they were fitted to.
    """

    name = "aequa"
    evaluator_cls = WidthEvaluator

    def __init__(self, config: AequaConfig, model_fn: ModelFn, *args: Any, **kwargs: Any) -> None:
        require_slimmable(model_fn())
        super().__init__(config, model_fn, *args, **kwargs)  # refuses an empty validation split
        self.tracker = CosineContribution(config.contribution_alpha)

    # -- set-up ---------------------------------------------------------------------------

    def setup(self, grid: Grid) -> dict[str, Any]:
        sizes = self.config.contribution == "data_size"
        self.standalone_phase(grid, sizes=sizes, val=self.val, test=self.test)
        out: dict[str, Any] = {}
        if self.standalone is not None:
            out["standalone_accuracy"] = {str(k): v for k, v in self.standalone.own.items()}
        return out

    # -- rounds (Algorithm 1) -------------------------------------------------------------

    def train_message(self, arrays: Arrays, width: float) -> Message:
        """A member's training message: the (sub-)model and the width settings."""
        cfg = self.config
        config = {**cfg.local.as_config(), **cfg.message_config(), "width": width}
        return Message("aequa_train", arrays=arrays, config=config)

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        return broadcast(self.train_message(self.weights, 1.0), sampled)

    def observe(self, replies: Mapping[int, Message], new: Arrays) -> dict[str, Any]:
        """CGSV-style contributions: each update's cosine with the round's aggregate."""
        if self.config.contribution != "cgsv":
            return {}
        deltas = {c: subtract(r.arrays, self.weights) for c, r in replies.items()}
        phis = self.tracker.observe(deltas, subtract(new, self.weights))
        return {"cosine": {str(c): v for c, v in phis.items()}}

    def evaluate(self, rnd: int) -> dict[str, Any]:
        p_min = self.config.p_min
        return {
            "test_accuracy": self.test(self.weights),
            f"test_accuracy_p{p_min:g}": self.test(self.weights, p_min),
        }

    # -- finish: post-training allocation -------------------------------------------------

    def contributions(self, grid: Grid) -> dict[int, float]:
        """Each member's contribution under the configured assessment."""
        static = self.static_contributions(grid)
        if static is not None:
            return static
        values = self.tracker.values()
        missing = [c for c in grid.client_ids if c not in values]
        if missing:  # never sampled: nothing was observed, so nothing is credited
            log.warning("members %s were never observed; their contribution is 0", missing[:5])
        return {c: values.get(c, 0.0) for c in grid.client_ids}

    def allocate(self, contributions: Mapping[int, float], step: float) -> Allocation:
        cfg = self.config
        grid_widths, raw, _ = accuracy_curve(
            lambda p: self.val(self.weights, p), width_grid(cfg.p_min, step)
        )
        return allocate(
            contributions, grid_widths, raw, normalisation=cfg.normalisation, rule=cfg.rule
        )

    def distribute(self, grid: Grid, widths: Mapping[int, float]) -> dict[int, dict[str, float]]:
        """Send every member its reward sub-model; members score it on their test views."""
        per_member: dict[int, dict[str, float]] = {}
        if not self.config.evaluate_clients:
            return per_member
        by_width: dict[float, list[int]] = {}
        for cid, p in widths.items():
            by_width.setdefault(p, []).append(cid)
        for p, members in sorted(by_width.items()):
            msg = Message(
                "evaluate_width", arrays=self.test.sub_arrays(self.weights, p), config={"width": p}
            )
            replies = send_chunked(
                grid, broadcast(msg, members), self.config.chunk_size, ReplySpec({})
            )
            per_member.update({c: dict(r.metrics) for c, r in replies.items()})
        return per_member

    def finish(self, grid: Grid) -> dict[str, Any]:
        cfg = self.config
        contributions = self.contributions(grid)
        allocation = self.allocate(contributions, cfg.grid_step)
        acc_at = {p: self.test(self.weights, p) for p in sorted(set(allocation.widths.values()))}
        reward_test = {c: acc_at[p] for c, p in allocation.widths.items()}
        own = self.distribute(grid, allocation.widths)
        summary: dict[str, Any] = {
            "test_accuracy": self.test(self.weights),
            "contribution_kind": cfg.contribution,
            "curve_split": "validation",
            "p_min": cfg.p_min,
            **allocation.as_dict(),
            **reward_summary(contributions, reward_test, own, self.standalone, allocation.widths),
        }
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.tracker.load_state_dict(state["tracker"])
