"""Perturbation data for server-side unlearning: synthetic inputs made from the model alone.

The server holds no member data. It inverts the trained model instead: starting from noise,
inputs are optimised until the model assigns them a given class with high confidence (a
"class impression"). Impressions of the forgotten class are what to forget; impressions of the
other classes, labelled with the original model's soft outputs, are what to keep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_impressions(
    model: nn.Module,
    classes: list[int],
    per_class: int,
    input_shape: tuple[int, ...],
    *,
    steps: int = 60,
    lr: float = 0.1,
    seed: int = 0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels): ``per_class`` optimised inputs per class, kept in [0, 1]."""
    device = device or next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([c for c in classes for _ in range(per_class)], device=device)
    raw = torch.randn((len(labels), *input_shape), generator=gen).to(device).mul_(0.5)
    raw.requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            x = torch.sigmoid(raw)
            loss = F.cross_entropy(model(x), labels) + 1e-3 * (x**2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return torch.sigmoid(raw).detach(), labels
