"""Aequa with training-time model rewards (Algorithm 2 as reconstructed; docs/methods/aequa.md).

Members are rewarded *during* training: each round a member receives only the sub-network of
the width its contribution earned so far, trains that (its widest network plus narrower ones,
as in Algorithm 1) and sends back the smaller tensors. A member never holds more than its
reward, so no TEE is needed to keep the full model from it.

Each round:

1. contributions so far (a static measure, or CGSV's cosine EMA tracked online);
2. widths by the post-training rule (:mod:`.allocation`) on a coarse accuracy-vs-width curve of
   the current model (validation split); in the first ``warmup_rounds`` everyone trains the
   full slimmable model, because the curve of an untrained model says nothing;
3. each sampled member gets its width-``p_i`` sub-model and trains it;
4. width-aware aggregation: every entry is averaged over the members whose width covers it
   (HeteroFL's rule: :func:`~consortium.core.aggregation.partial_mean` with smaller tensors);
   the top contributor always trains the full width, so every entry is covered by someone.

The cosine of a sub-width update is taken on the entries it covers, so a narrow member is not
penalised for the entries it was never given. At the end, the rewards are allocated once more
with the final contributions and a fine curve, as in the post-training variant.

A variant of :class:`~consortium.algorithms.aequa.workflow.Aequa` that overrides two hooks:
what each member is sent, and how the (smaller) updates are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consortium.algorithms.aequa.config import AequaTrainingTimeConfig
from consortium.algorithms.aequa.workflow import Aequa
from consortium.algorithms.base.workflow import Expect, FederatedWorkflow
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message


class AequaTrainingTime(Aequa):
    """Aequa's training-time variant; same members and summary as :class:`Aequa`."""

    name = "aequa_training_time"
    config: AequaTrainingTimeConfig

    def round_widths(self, grid: Grid, rnd: int) -> dict[int, float]:
        """Every member's width this round (a pure function of the state: resumable)."""
        if rnd <= self.config.warmup_rounds:
            return dict.fromkeys(grid.client_ids, 1.0)
        return self.allocate(self.contributions(grid), self.config.curve_step).widths

    def configure_train(self, grid: Grid, rnd: int, sampled: list[int]) -> dict[int, Message]:
        widths = self.round_widths(grid, rnd)
        self._widths = {c: widths[c] for c in sampled}
        payloads: dict[float, Arrays] = {}
        for p in sorted(set(self._widths.values())):
            payloads[p] = self.test.sub_arrays(self.weights, p)
        return {c: self.train_message(payloads[p], p) for c, p in self._widths.items()}

    def expect(self, messages: Mapping[int, Message]) -> Expect:
        return FederatedWorkflow.expect(self, messages)  # each reply like what it was sent

    def aggregate_train(
        self, grid: Grid, rnd: int, replies: Mapping[int, Message]
    ) -> dict[str, Any]:
        widths = {"widths": {str(c): w for c, w in self._widths.items()}}
        return {**widths, **super().aggregate_train(grid, rnd, replies)}
