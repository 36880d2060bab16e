"""Small convolutional and fully connected classifiers for digit-sized images.

Sized for the data that reaches these machines (8x8 digits, 28x28 MNIST / Fashion-MNIST) so
tests and demos train in seconds on two CPU cores; no batch norm, so every member's model can
be evaluated without running statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from consortium.models.pooling import MaxPool2d


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (conv, ReLU, 2x2 max-pool) and two linear layers.

    Parameters
    ----------
    input_shape
        ``(channels, height, width)``; height and width at least 4.
    num_classes
        Output size.
    channels
        Filters of the two conv layers.
    hidden
        Width of the hidden linear layer.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        if h < 4 or w < 4:
            raise ValueError(f"SmallCNN needs images of at least 4x4, got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            MaxPool2d(2),
        )
        flat = channels[1] * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Flatten, then hidden ReLU layers, then a linear output layer."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: tuple[int, ...] = (200, 200),
    ) -> None:
        super().__init__()
        size = 1
        for d in input_shape:
            size *= d
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
