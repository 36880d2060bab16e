"""Moving a torch model's weights in and out of message payloads.

Payloads are numpy arrays so every runtime, log and validator can handle them without torch.
Arrays handed out are copies: a member's scratch model is reused for the next member, and an
array still aliasing its parameters would change under the server's feet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from consortium.core.message import Arrays


def get_arrays(model: nn.Module, names: Iterable[str] | None = None) -> Arrays:
    """Copy the model's state (parameters and buffers) into named numpy arrays."""
    state = model.state_dict()
    keys = list(state) if names is None else list(names)
    return {k: state[k].detach().cpu().numpy().copy() for k in keys}


def set_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Load named arrays into the model (in place, no reallocation of parameters)."""
    state = model.state_dict()
    if strict:
        missing = set(state) - set(arrays)
        if missing:
            raise KeyError(f"arrays miss model entries: {sorted(missing)[:3]}")
    unknown = set(arrays) - set(state)
    if unknown:
        raise KeyError(f"arrays name entries the model lacks: {sorted(unknown)[:3]}")
    with torch.no_grad():
        for k, v in arrays.items():
            target = state[k]
            if tuple(target.shape) != tuple(v.shape):
                raise ValueError(f"{k}: array shape {v.shape} != model shape {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(v)))


def trainable_names(model: nn.Module) -> list[str]:
    """Names of parameters that require gradients (what a member trains and sends)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
