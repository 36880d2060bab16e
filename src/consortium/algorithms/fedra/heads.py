"""DepthFL's classifiers after every block, and its mutual self-distillation loss.

The classifier after the last block of the full model is the model's own head; after block
``d < L`` sits an auxiliary linear head named ``depth_heads.{d}``, reading the block's output
the way the model's head reads the last one (:func:`consortium.models.transformer.readout`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.models.transformer import head_input_dim, model_inputs, readout

HEAD_PREFIX = "depth_heads"
_HEAD_KEY = re.compile(rf"^{HEAD_PREFIX}\.(\d+)\.(weight|bias)$")


def head_depth(key: str) -> int | None:
    """Depth of an auxiliary head's array name, ``None`` for any other name."""
    m = _HEAD_KEY.match(key)
    return int(m.group(1)) if m else None


def init_head_arrays(model: nn.Module, depths: Sequence[int], num_classes: int, seed: int):
    """Fresh auxiliary heads (``nn.Linear``'s own initialisation, seeded) as named arrays."""
    gen = torch.Generator().manual_seed(seed)
    dim = head_input_dim(model)
    out: dict[str, np.ndarray] = {}
    bound = 1 / math.sqrt(dim)
    for d in depths:
        w = (torch.rand(num_classes, dim, generator=gen) * 2 - 1) * bound
        b = (torch.rand(num_classes, generator=gen) * 2 - 1) * bound
        out[f"{HEAD_PREFIX}.{d}.weight"] = w.numpy()
        out[f"{HEAD_PREFIX}.{d}.bias"] = b.numpy()
    return out


class DepthHeads(nn.Module):
    """A (sub-)model of depth D with one classifier after each of its blocks.

    ``forward`` returns the logits of every head, shallowest first. ``own_head_last`` says
    whether the head after block D is the model's own (the full model) or ``depth_heads.D``
    (a shallower member).
    """

    def __init__(
        self, model: nn.Module, heads: Mapping[str, np.ndarray], depth: int, own_head_last: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.depth = depth
        self.own_head_last = own_head_last
        aux = range(1, depth if own_head_last else depth + 1)
        self.depth_heads = nn.ModuleDict()
        for d in aux:
            w = torch.from_numpy(np.array(heads[f"{HEAD_PREFIX}.{d}.weight"]))
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(torch.from_numpy(np.array(heads[f"{HEAD_PREFIX}.{d}.bias"])))
            self.depth_heads[str(d)] = lin

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.model(**model_inputs(x), output_hidden_states=True)
        hidden = out.hidden_states  # embeddings, then one entry per block
        logits = [
            self.depth_heads[str(d)](readout(self.model, hidden[d]))
            for d in range(1, len(hidden))
            if str(d) in self.depth_heads
        ]
        if self.own_head_last:
            logits.append(out.logits)
        return logits

    def head_arrays(self) -> dict[str, np.ndarray]:
        """The auxiliary heads as named arrays (what a member sends besides adapters)."""
        return {
            f"{HEAD_PREFIX}.{d}.{n}": p.detach().cpu().numpy().copy()
            for d, lin in self.depth_heads.items()
            for n, p in lin.named_parameters()
        }


def mutual_distillation_loss(
    logits: Sequence[torch.Tensor], y: torch.Tensor, kd_weight: float
) -> torch.Tensor:
    """Sum of the heads' cross-entropies plus ``kd_weight`` times, for every head, the mean
    KL divergence from each other head's (detached) prediction to its own (temperature 1)."""
    loss = sum(F.cross_entropy(z, y) for z in logits)
    assert isinstance(loss, torch.Tensor)
    n = len(logits)
    if n < 2 or kd_weight == 0:
        return loss
    logp = [F.log_softmax(z, dim=-1) for z in logits]
    kd = logits[0].new_zeros(())
    for o in range(n):
        for j in range(n):
            if j != o:
                kd = kd + F.kl_div(
                    logp[o], logp[j].detach(), log_target=True, reduction="batchmean"
                )
    return loss + kd_weight * kd / (n - 1)


def rampup_weight(kd_weight: float, rampup: int, rnd: int) -> float:
    """``kd_weight · exp(-5 (1 - min(r, R)/R)^2)``, or ``kd_weight`` when ``R = 0``."""
    if rampup <= 0:
        return kd_weight
    t = min(rnd, rampup) / rampup
    return kd_weight * math.exp(-5 * (1 - t) ** 2)
