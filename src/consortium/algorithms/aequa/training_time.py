"""Aequa with training-time model rewards (Algorithm 2, papers.md 1(b).4, reconstructed).

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
"""

from __future__ import annotations

from typing import Any

from consortium.algorithms.aequa.contribution import subtract
from consortium.algorithms.aequa.workflow import Aequa
from consortium.core.aggregation import Update, partial_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.validation import ReplySpec


class AequaTrainingTime(Aequa):
    """Aequa's training-time variant; same options, members, summary as :class:`Aequa`."""

    name = "aequa_training_time"

    def round_widths(self, grid: Grid, rnd: int) -> dict[int, float]:
        """Every member's width this round (a pure function of the state: resumable)."""
        if rnd <= self.config.warmup_rounds:
            return dict.fromkeys(grid.client_ids, 1.0)
        return self.allocate(self.contributions(grid), self.config.curve_step).widths

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        sampled = grid.sample(cfg.clients_per_round)
        widths = self.round_widths(grid, rnd)
        payloads: dict[float, Arrays] = {}
        messages: dict[int, Message] = {}
        for cid in sampled:
            p = widths[cid]
            if p not in payloads:
                payloads[p] = self.test.sub_arrays(self.weights, p)
            messages[cid] = Message(
                "aequa_train",
                arrays=payloads[p],
                config={**cfg.local.as_config(), **cfg.width_config(), "width": p},
            )
        replies = grid.send(messages, expect=lambda c: ReplySpec.like(payloads[widths[c]]))
        metrics: dict[str, Any] = {
            "sampled": sampled,
            "widths": {str(c): widths[c] for c in sampled},
        }
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0) if cfg.weighted else 1.0)
            for r in replies.values()
        ]
        if sum(u.weight for u in updates) > 0:
            new = partial_mean(updates, self.weights)
            if cfg.contribution.kind == "cgsv":
                aggregate = subtract(new, self.weights)
                deltas = {c: subtract(r.arrays, self.weights) for c, r in replies.items()}
                phis = self.tracker.observe(deltas, aggregate)
                metrics["cosine"] = {str(c): v for c, v in phis.items()}
            self.weights = new
            losses = [r for r in replies.values() if "train_loss" in r.metrics]
            if losses:
                metrics["train_loss"] = sum(
                    r.metrics["train_loss"] * r.metrics.get("num_examples", 1.0) for r in losses
                ) / max(sum(r.metrics.get("num_examples", 1.0) for r in losses), 1.0)
        if rnd % cfg.eval_every == 0 or rnd == self.num_rounds:
            metrics["test_accuracy"] = self.test(self.weights)
            metrics[f"test_accuracy_p{cfg.p_min:g}"] = self.test(self.weights, cfg.p_min)
        return metrics
