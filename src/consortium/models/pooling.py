"""Max-pooling that computes its forward pass in channels-last layout.

Why: on CPU, PyTorch's max-pool forward for the default (NCHW) layout runs about ten times
slower than for channels-last (measured here with one thread: 3.8 ms vs 0.3 ms for a batch of 32
Fashion-MNIST feature maps of 32 x 28 x 28), and it was the largest single cost of a small CNN's
training step and evaluation. The backward pass is equally fast in both layouts, so only the
forward is moved: the input is copied to channels-last, pooled there, and the result (a quarter
of the size) copied back. The maximum and its position are the same in both layouts (each
window is scanned in the same order), so the outputs, indices and gradients are bit-identical to
``torch.nn.functional.max_pool2d``'s; ``tests/models/test_pooling.py`` checks it, ties included.
Elsewhere than on CPU, or for inputs that are not 4-D, the stock operator is used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Non-overlapping ``k x k`` max-pool: channels-last forward, the stock backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> torch.Tensor:
        out, idx = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last), k, return_indices=True
        )
        ctx.k = k
        ctx.save_for_backward(x, idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, idx = ctx.saved_tensors
        k = [ctx.k, ctx.k]
        back = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, k, k, [0, 0], [1, 1], False, idx.contiguous()
        )
        return back, None


def max_pool2d(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.max_pool2d(x, k)`` (stride ``k``, no padding), faster on CPU."""
    if x.device.type != "cpu" or x.dim() != 4 or x.dtype not in (torch.float32, torch.float64):
        return F.max_pool2d(x, k)
    if not (torch.is_grad_enabled() and x.requires_grad):  # scoring: no indices to keep
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k).contiguous()
    return _ChannelsLastMaxPool.apply(x, k)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(k)`` through :func:`max_pool2d` (same module type, no parameters)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return max_pool2d(x, k if isinstance(k, int) else int(k[0]))
