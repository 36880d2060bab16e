"""What local tuning costs a member: wall time and peak training memory.

Peak memory is counted, not estimated from a formula: parameters (frozen and trainable) and
gradients and optimiser state of the trainable ones are exact byte counts of the model a member
holds, and activations are the bytes autograd actually keeps for the backward pass, recorded
with ``torch.autograd.graph.saved_tensors_hooks`` (each storage counted once, weights not
counted twice). That is the part that grows with depth and batch size and that a device must
hold at once; it does not depend on the allocator, so it is the same on CPU and GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ActivationMeter:
    """Largest number of bytes saved for backward by one forward pass."""

    peak: int = 0
    _current: int = 0

    def __post_init__(self) -> None:
        self._seen: set[int] = set()
        self._skip: set[int] = set()

    def watch(self, model: nn.Module) -> None:
        """Do not count ``model``'s parameters: they are counted as parameters already."""
        self._skip = {p.untyped_storage().data_ptr() for p in model.parameters()}

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """Count what autograd saves inside this block (one training forward pass)."""
        self._seen, self._current = set(), 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self._seen and ptr not in self._skip:
                self._seen.add(ptr)
                self._current += storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.peak = max(self.peak, self._current)

    def wrap(self, loss_fn: LossFn) -> LossFn:
        """``loss_fn`` with its forward pass counted."""

        def counted(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            with self.forward():
                return loss_fn(model, xb, yb)

        return counted


def state_bytes(model: nn.Module, optimizer: str = "sgd", momentum: float = 0.9) -> dict[str, int]:
    """Exact bytes of parameters, gradients and optimiser state of ``model``'s training."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    slots = 2 if optimizer == "adam" else (1 if momentum > 0 else 0)
    return {
        "param_bytes": int(params),
        "trainable_bytes": int(trainable),
        "grad_bytes": int(trainable),
        "optimizer_bytes": int(slots * trainable),
    }


def peak_bytes(costs: dict[str, float]) -> float:
    """Parameters + gradients + optimiser state + the largest activation set of a step."""
    keys = ("param_bytes", "grad_bytes", "optimizer_bytes", "activation_bytes")
    return float(sum(costs.get(k, 0.0) for k in keys))
