"""Perturbation data for server-side unlearning: synthetic inputs made from the model alone.

The server holds no member data. It inverts the trained model instead: starting from noise,
inputs are optimised until the model assigns them a given class with high confidence (a
"class impression"). Impressions of the forgotten class are what to forget; impressions of the
other classes are what to keep, with the model's soft outputs on them (not just the class each
was made for) as targets, so fine-tuning keeps how the model weighs the classes against each
other, not only its top answers. The paper says only that the server's updates are "aided by
perturbation data"; what that data is, is our reading (docs/methods/unlearning.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from consortium.metrics.unlearning import invert_classes


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, labels, soft outputs): ``per_class`` optimised inputs per class, kept in
    [0, 1], the class each was made for, and the model's softmax on it."""
    device = device or next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([c for c in classes for _ in range(per_class)], device=device)
    start = torch.randn((len(labels), *input_shape), generator=gen).to(device).mul_(0.5)
    x = invert_classes(model, labels, start, torch.sigmoid, steps=steps, lr=lr, penalty=0.0)
    with torch.no_grad():
        soft = F.softmax(model(x), 1)
    return x, labels, soft
