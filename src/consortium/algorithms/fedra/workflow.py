"""FedRA as a workflow: allocate blocks, dispatch sub-models, average each block's adapters
over the members that trained it.

Each round (Su, Li, Xue, ECCV 2024; the official code's defaults):

1. draw the allocation matrix: member k gets L_k blocks uniformly at random (FedRA), or the
   fixed blocks of a baseline (see :class:`FedRAConfig`);
2. send each sampled member its blocks' adapters and the head (nothing else travels);
3. members tune LoRA adapters and the head on their sub-model;
4. each block's adapters are averaged over the members that trained it this round; blocks
   nobody trained keep their adapters; the head is averaged over all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import nn

from consortium.algorithms.fedra.allocation import allocate
from consortium.algorithms.fedra.client import LogitsOnly, block_arrays
from consortium.algorithms.fedra.config import FedRAConfig
from consortium.core.aggregation import Update, partial_mean
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.sampling import derive_seed, rng_for
from consortium.core.validation import ReplySpec
from consortium.core.workflow import Workflow
from consortium.models.transformer import adapter_arrays, block_prefix, num_blocks, sub_model
from consortium.training import evaluate


class FedRA(Workflow):
    """Random allocation of blocks (FedRA), or a baseline's fixed allocation.

    Parameters
    ----------
    config
        See :class:`FedRAConfig`; ``len(config.capacities)`` must equal the number of members.
    lora_model_fn
        Builds the full pretrained backbone with LoRA injected (seeded by the caller).
    test_x, test_y
        Server test set (token ids or images) for the global model's accuracy.
    test_groups
        Optional domain id per test sample: per-domain accuracies are reported too.
    """

    progress_keys = ("test_accuracy", "train_loss")

    def __init__(
        self,
        config: FedRAConfig,
        lora_model_fn: Callable[[], nn.Module],
        test_x: np.ndarray,
        test_y: np.ndarray,
        test_groups: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.name = {
            "random": "fedra",
            "first": "inclusivefl",
            "all": "all_large",
            "first_min": "all_small",
        }[config.allocation]
        self.num_rounds = config.rounds
        self.lora_model_fn = lora_model_fn
        self.test = (test_x, test_y, test_groups)
        self._full: nn.Module | None = None
        self.adapters: Arrays = {}

    def full(self) -> nn.Module:
        if self._full is None:
            self._full = self.lora_model_fn()
        return self._full

    @property
    def depth(self) -> int:
        return num_blocks(self.full())

    def global_blocks(self) -> list[int]:
        """Blocks of the released model (ALL-small keeps only the first min L_k)."""
        if self.config.allocation == "first_min":
            return list(range(min(min(self.config.capacities), self.depth)))
        return list(range(self.depth))

    def setup(self, grid: Grid) -> dict[str, Any]:
        if len(self.config.capacities) != grid.num_clients:
            raise ValueError(
                f"{len(self.config.capacities)} capacities for {grid.num_clients} members"
            )
        self.adapters = adapter_arrays(self.full())
        return {
            "blocks": self.depth,
            "adapter_floats": int(sum(v.size for v in self.adapters.values())),
        }

    def run_round(self, grid: Grid, rnd: int) -> dict[str, Any]:
        cfg = self.config
        sampled = grid.sample(cfg.clients_per_round)
        rows = allocate(
            [cfg.capacities[c] for c in sampled],
            self.depth,
            cfg.allocation,
            rng_for(grid.seed, "allocation", rnd),
            cfg.cover_all_layers,
        )
        prefix = block_prefix(self.full())
        messages, specs = {}, {}
        for k, cid in enumerate(sampled):
            blocks = [int(b) for b in np.flatnonzero(rows[k])]
            payload = block_arrays(self.adapters, prefix, blocks)
            messages[cid] = Message(
                "fedra_train",
                arrays={**payload, "blocks": np.asarray(blocks, np.int64)},
                config=cfg.local.as_config(),
            )
            specs[cid] = ReplySpec.like(payload)
        replies = grid.send(messages, expect=lambda c: specs[c])
        updates = [
            Update(r.arrays, r.metrics.get("num_examples", 0.0) if cfg.weighted else 1.0)
            for r in replies.values()
        ]
        if updates:
            self.adapters = partial_mean(updates, self.adapters)
        covered = rows.any(0)
        metrics: dict[str, Any] = {
            "sampled": sampled,
            "blocks_trained": int(covered.sum()),
            "allocation": {str(c): np.flatnonzero(rows[k]).tolist() for k, c in enumerate(sampled)},
        }
        losses = [
            (r.metrics["train_loss"], r.metrics.get("num_examples", 1.0))
            for r in replies.values()
            if "train_loss" in r.metrics
        ]
        if losses:
            metrics["train_loss"] = sum(v * w for v, w in losses) / max(
                sum(w for _, w in losses), 1
            )
        if rnd % cfg.eval_every == 0 or rnd == self.num_rounds:
            metrics.update(self.evaluate())
        return metrics

    def global_model(self) -> nn.Module:
        """The released model: the global blocks with their aggregated adapters and head."""
        from consortium.models.transformer import load_adapter_arrays, renumber

        blocks = self.global_blocks()
        model = sub_model(self.full(), blocks)
        prefix = block_prefix(self.full())
        local = renumber(
            block_arrays(self.adapters, prefix, blocks),
            prefix,
            {g: j for j, g in enumerate(blocks)},
        )
        load_adapter_arrays(model, local)
        return model

    def evaluate(self) -> dict[str, Any]:
        x, y, groups = self.test
        if len(y) == 0:
            return {}
        model = LogitsOnly(self.global_model())
        out: dict[str, Any] = {"test_accuracy": evaluate(model, x, y)["accuracy"]}
        if groups is not None:
            per = {
                str(g): evaluate(model, x, y, np.flatnonzero(groups == g))["accuracy"]
                for g in np.unique(groups)
            }
            out["domain_accuracy"] = per
            out["mean_domain_accuracy"] = float(np.mean(list(per.values())))
        return out

    def finish(self, grid: Grid) -> dict[str, Any]:
        return {**self.evaluate(), "global_blocks": len(self.global_blocks())}

    def final_arrays(self) -> Arrays:
        return self.adapters

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.adapters = dict(state["adapters"])


def seeded_lora_model_fn(
    build: Callable[[], nn.Module], lora: Any, seed: int
) -> Callable[[], nn.Module]:
    """A ``lora_model_fn`` whose new head and adapters are the same in every process."""
    import torch

    from consortium.models.transformer import with_lora

    def make() -> nn.Module:
        torch.manual_seed(derive_seed(seed, "init"))
        return with_lora(build(), lora)

    return make
