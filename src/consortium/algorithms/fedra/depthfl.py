"""DepthFL (Kim, Kim, Kim, Kim; ICLR 2023) as a baseline of FedRA, on transformer blocks.

Each round (a :class:`~consortium.algorithms.fedra.workflow.FedRA` round with these changes):

1. member k is sent the adapters of its first L_k blocks and the classifiers after blocks
   1..L_k (the model's own head when L_k = L, auxiliary heads ``depth_heads.d`` below);
2. it trains all of them with every head's cross-entropy plus mutual self-distillation among
   the heads (:func:`~consortium.algorithms.fedra.heads.mutual_distillation_loss`);
3. blocks and heads are averaged over the members that hold them (depth-wise partial
   averaging, as for InclusiveFL);
4. the released model is the full-depth model with all heads; it predicts with the ensemble of
   the heads that were trained or with the last head (``eval_head``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from consortium.algorithms.fedra.config import Allocation, DepthFLConfig
from consortium.algorithms.fedra.heads import (
    DepthHeads,
    head_depth,
    init_head_arrays,
    rampup_weight,
)
from consortium.algorithms.fedra.workflow import FedRA
from consortium.core.grid import Grid
from consortium.core.message import Arrays, Message
from consortium.core.sampling import derive_seed


class DepthFL(FedRA):
    """Depth-wise sub-models with a classifier after every block and self-distillation.

    Parameters are those of :class:`FedRA`, with a :class:`DepthFLConfig`.
    """

    name = "depthfl"
    allocation: Allocation = "first"
    message_kind = "depthfl_train"
    config: DepthFLConfig

    def __init__(self, config: DepthFLConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.trained_heads: set[int] = set()

    @property
    def num_classes(self) -> int:
        return int(self.full().config.num_labels)

    def head_name(self) -> str:
        return self.config.lora.head

    def setup(self, grid: Grid) -> dict[str, Any]:
        out = super().setup(grid)
        heads = init_head_arrays(
            self.full(),
            range(1, self.depth),
            self.num_classes,
            derive_seed(grid.seed, "depth_heads"),
        )
        self.adapters.update(heads)
        out["head_floats"] = int(sum(v.size for v in heads.values()))
        return out

    def _is_own_head(self, key: str) -> bool:
        return f".{self.head_name()}." in f".{key}"

    def payload(self, blocks: list[int]) -> Arrays:
        """Adapters of the member's blocks, the auxiliary heads after them, and the model's
        own head only for a member that holds every block (nobody else trains it)."""
        depth = len(blocks)
        full_depth = depth == self.depth
        out = {}
        for key, value in super().payload(blocks).items():
            d = head_depth(key)
            if d is not None:
                if d <= depth and not (full_depth and d == self.depth):
                    out[key] = value
            elif full_depth or not self._is_own_head(key):
                out[key] = value
        return out

    def train_config(self, rnd: int) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().train_config(rnd),
            "kd_weight": rampup_weight(cfg.kd_weight, cfg.kd_rampup, rnd),
            "head_name": self.head_name(),
        }

    def aggregate(
        self, replies: Mapping[int, Message], rows: np.ndarray, sampled: list[int]
    ) -> None:
        super().aggregate(replies, rows, sampled)
        for r in replies.values():
            self.trained_heads.add(int(r.metrics.get("blocks", 0)))
            self.trained_heads.update(d for k in r.arrays if (d := head_depth(k)) is not None)

    def model_arrays(self) -> Arrays:
        return {k: v for k, v in self.adapters.items() if head_depth(k) is None}

    def released(self) -> DepthHeads:
        """The full-depth model with its aggregated adapters and every head."""
        heads = {k: v for k, v in self.adapters.items() if head_depth(k) is not None}
        return DepthHeads(self.global_model(), heads, self.depth, own_head_last=True)

    @torch.no_grad()
    def predict(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predictions of the configured head(s); the last head's and the ensemble's are
        logged too (one forward pass gives every head's output)."""
        net = self.released().eval()
        used = [d - 1 for d in sorted(self.trained_heads)] or list(range(self.depth))
        x = self.test[0]
        last, ens = [], []
        for i in range(0, len(x), 256):
            logits = net(torch.from_numpy(x[i : i + 256]))
            last.append(logits[-1].argmax(1).numpy())
            probs = torch.stack([torch.softmax(logits[j], -1) for j in used]).mean(0)
            ens.append(probs.argmax(1).numpy())
        preds = {
            "last_head_accuracy": np.concatenate(last),
            "ensemble_accuracy": np.concatenate(ens),
        }
        main = preds[
            "last_head_accuracy" if self.config.eval_head == "last" else "ensemble_accuracy"
        ]
        return main, preds

    def finish(self, grid: Grid) -> dict[str, Any]:
        return {**super().finish(grid), "heads_trained": sorted(self.trained_heads)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "trained_heads": sorted(self.trained_heads)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.trained_heads = {int(d) for d in state.get("trained_heads", [])}
