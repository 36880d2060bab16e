"""SCAFFOLD as a workflow: FedAvg's round with control variates that correct client drift.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. *SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning.* ICML 2020 (Algorithm 1, option II).

Each round, on the round skeleton of :class:`~consortium.algorithms.base.workflow.
FederatedWorkflow` (only the hooks below are SCAFFOLD's):

1. sampled members receive the model ``x`` and the server control variate ``c``;
2. each takes K local steps on ``g(y) - c_i + c`` (K = ``local_steps``, the same for every
   member) and sends its new model ``y_i`` and ``Δc_i = c_i+ - c_i`` with
   ``c_i+ = c_i - c + (x - y_i)/(K·η_l)`` (``c_i`` stays home);
3. the server steps ``x ← x + η_g · mean(y_i - x)`` and ``c ← c + (|S|/N) · mean(Δc_i)``
   ``= c + (1/N) Σ Δc_i``, which keeps ``c`` the mean of all N members' ``c_i``.

The server's state is ``x``, ``c`` and, per member, the last round whose reply it used (sent
back so members commit their ``c_i`` only when the server did; see :mod:`.client`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consortium.algorithms.base.workflow import (
    Expect,
    GlobalModelWorkflow,
    updates_from,
    weighted_metric,
)
from consortium.algorithms.scaffold.client import CONTROL, split
from consortium.algorithms.scaffold.config import SCAFFOLDConfig
from consortium.core.aggregation import Update
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec


class SCAFFOLD(GlobalModelWorkflow[SCAFFOLDConfig]):
    """SCAFFOLD; members run :func:`~consortium.algorithms.scaffold.scaffold_client_app`.

    Parameters are those of :class:`~consortium.algorithms.base.workflow.GlobalModelWorkflow`.
    """

    name = "scaffold"

    def __init__(self, config: SCAFFOLDConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.control: Arrays = {}
        self.accepted: dict[int, int] = {}

    def setup(self, grid: Grid) -> dict[str, Any]:
        super().setup(grid)
        self.control = {k: np.zeros_like(v) for k, v in self.weights.items() if v.dtype.kind == "f"}
        return {}

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        arrays = {**self.weights, **{CONTROL + k: v for k, v in self.control.items()}}
        local = self.config.local.as_config()
        return {
            c: Message(
                "scaffold_train",
                arrays=arrays,
                config={
                    **local,
                    "local_steps": self.config.local_steps or 0,
                    "accepted_round": self.accepted.get(c, -1),
                },
            )
            for c in sampled
        }

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        arrays = {**self.weights, **{CONTROL + k: v for k, v in self.control.items()}}
        return ReplySpec.like(arrays)

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        updates = [
            Update(split(r.arrays)[0], u.weight)
            for r, u in zip(
                replies.values(), updates_from(replies, self.config.weighted), strict=True
            )
        ]
        if sum(u.weight for u in updates) <= 0:
            return {}
        mean = self.aggregate(updates)
        eta = self.config.server_lr
        self.weights = {
            k: (v + eta * (mean[k] - v)).astype(v.dtype) if v.dtype.kind == "f" else mean[k]
            for k, v in self.weights.items()
        }
        deltas_c = [split(r.arrays)[1] for r in replies.values()]
        n = grid.num_clients
        self.control = {
            k: (v + sum(d[k] for d in deltas_c) / n).astype(v.dtype)
            for k, v in self.control.items()
        }
        self.accepted.update(dict.fromkeys(replies, rnd))
        sq = sum(float(np.sum(np.square(v, dtype=np.float64))) for v in self.control.values())
        return {"train_loss": weighted_metric(replies, "train_loss"), "control_norm": sq**0.5}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "control": self.control, "accepted": self.accepted}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.control = dict(state["control"])
        self.accepted = {int(k): int(v) for k, v in state["accepted"].items()}
