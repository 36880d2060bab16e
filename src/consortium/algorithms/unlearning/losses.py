"""Forgetting terms and masked optimisation shared by the method and its baselines."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.training import LocalTrainConfig, make_optimizer


def forget_term(
    logits: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """A loss whose minimum means the model no longer predicts ``y`` on these inputs."""
    if kind == "random_label":
        shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
        return F.cross_entropy(logits, (y + shift) % num_classes)
    if kind == "ascent":
        # Clipped: ascent past a loss of 5 nats only destroys the rest of the model.
        return -torch.clamp(F.cross_entropy(logits, y), max=5.0)
    if kind == "uniform":
        return F.kl_div(
            F.log_softmax(logits, 1),
            torch.full_like(logits, 1.0 / num_classes),
            reduction="batchmean",
        )
    raise ValueError(f"unknown forget loss {kind!r}")


class MaskedParameters:
    """Keeps every parameter entry outside a mask exactly at its starting value.

    Gradients are masked and, after every optimiser step, unmasked entries are restored, so
    momentum or weight decay cannot move a frozen entry either. Parameters absent from the mask
    do not get gradients at all.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, np.ndarray]) -> None:
        params = dict(model.named_parameters())
        unknown = set(mask) - set(params)
        if unknown:
            raise KeyError(f"mask names parameters the model lacks: {sorted(unknown)[:3]}")
        self.model = model
        self.masks = {
            n: torch.from_numpy(np.asarray(m, bool)).to(params[n].device) for n, m in mask.items()
        }
        self.frozen = {n: p.detach().clone() for n, p in params.items() if n in self.masks}
        for name, p in params.items():
            p.requires_grad_(name in self.masks)

    def trainable(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if n in self.masks]

    def mask_gradients(self) -> None:
        for name, p in self.model.named_parameters():
            if name in self.masks and p.grad is not None:
                p.grad.mul_(self.masks[name])

    @torch.no_grad()
    def restore(self) -> None:
        for name, p in self.model.named_parameters():
            if name in self.masks:
                p.copy_(torch.where(self.masks[name], p, self.frozen[name]))

    def release(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(True)


def masked_steps(
    model: nn.Module,
    mask: Mapping[str, np.ndarray],
    batches: list[tuple[torch.Tensor | None, ...]],
    cfg: LocalTrainConfig,
    *,
    forget_kind: str,
    forget_weight: float,
    num_classes: int,
    seed: int,
) -> float:
    """One optimiser step per (retain x, retain y, forget x, forget y) batch on masked entries."""
    guard = MaskedParameters(model, mask)
    opt = make_optimizer(guard.trainable(), cfg)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    total = 0.0
    try:
        for rx, ry, fx, fy in batches:
            terms = []
            if rx is not None and ry is not None and len(rx):
                terms.append(F.cross_entropy(model(rx), ry))
            if fx is not None and fy is not None and len(fx) and forget_weight > 0:
                terms.append(
                    forget_weight * forget_term(model(fx), fy, forget_kind, num_classes, gen)
                )
            if not terms:
                continue
            loss = torch.stack(terms).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            guard.mask_gradients()
            opt.step()
            guard.restore()
            total += float(loss.detach())
    finally:
        guard.release()
    return total / max(len(batches), 1)
