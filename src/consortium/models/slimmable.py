"""Slimmable networks: one set of weights, any width from a thin sub-network to the full model.

Aequa (Tastan, Horváth, Nandakumar, ICML 2025) rewards each member with a sub-network whose
width matches its contribution, so the model must run at any width ``p`` in (0, 1] and a
sub-network must be a real, smaller model a member can hold. Following slimmable networks
(Yu et al., ICLR 2019; Yu & Huang, ICCV 2019), width ``p`` keeps the **first** ``⌈p·C⌉``
output channels of every hidden layer (and therefore the first input channels of the next);
the input channels of the first layer and the output classes are never sliced. Sub-networks are
nested: the width-``p`` weights are the leading corner of every full tensor, which is also
exactly what :func:`consortium.core.aggregation.partial_mean` expects from a smaller update.

Normalisation. Batch norm's running statistics belong to one width (the "running-BN trap"), so
no model here has them. :class:`SlimCNN` has no normalisation layer. :class:`SlimResNet18`
uses GroupNorm with a **fixed number of channels per group** (``group_size``): a layer with
``C'`` kept channels normalises ``C' / group_size`` groups, each group is the same set of
channels at every width, and every width is evaluated with the statistics of its own batch.
For the group count to be whole, ResNet widths are rounded *up* to a multiple of
``group_size`` channels (so ``⌈p·C⌉`` becomes ``group_size·⌈⌈p·C⌉ / group_size⌉``); nearby
``p`` may thus give the same sub-network.

Public API: :class:`SlimmableModel` (``set_width``, ``forward(x, width=p)``, ``submodel(p)``,
``submodel_shapes(p)``), :class:`SlimCNN`, :class:`SlimResNet18`, :func:`slice_arrays`,
:func:`submodel_arrays`, :func:`scaled_channels`. Registered models: ``slim_cnn`` and
``slim_resnet18``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from consortium.core.message import Arrays
from consortium.models.pooling import max_pool2d
from consortium.models.registry import register_model, registered_models


def check_width(p: float) -> float:
    """Return ``p`` as a float if it is a valid width multiplier in (0, 1]."""
    p = float(p)
    if not 0.0 < p <= 1.0:  # also rejects NaN
        raise ValueError(f"a width must be in (0, 1], got {p}")
    return p


def scaled_channels(channels: int, p: float, multiple: int = 1) -> int:
    """Channels kept at width ``p``: ``⌈p·C⌉``, rounded up to a multiple, at least one unit.

    ``p·C`` is rounded to 6 decimals first so that e.g. ``0.3 · 10`` (2.9999999999999996 in
    floating point) keeps 3 channels, not 4.
    """
    p = check_width(p)
    kept = math.ceil(round(p * channels, 6))
    kept = max(multiple, multiple * math.ceil(kept / multiple))
    return min(channels, kept)


class SlimConv2d(nn.Conv2d):
    """A convolution that runs on the leading input channels it is given and returns the
    leading ``out_channels`` output channels (weights and bias sliced, never copied)."""

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self.out_channels if out_channels is None else out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = None if self.bias is None else self.bias[:out]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SlimLinear(nn.Linear):
    """A linear layer on the leading input features, returning the leading outputs."""

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self.out_features if out_features is None else out_features
        bias = None if self.bias is None else self.bias[:out]
        return F.linear(x, self.weight[:out, : x.shape[1]], bias)


class SlimGroupNorm(nn.Module):
    """GroupNorm with a fixed number of channels per group.

    With ``C'`` leading channels it normalises ``C' / group_size`` groups: group ``g`` is
    channels ``g·group_size .. (g+1)·group_size - 1`` at every width, so a group's statistics
    never mix channels that a narrower member does not hold.
    """

    def __init__(self, num_channels: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if group_size < 1 or num_channels % group_size:
            raise ValueError(
                f"GroupNorm: {num_channels} channels are not a multiple of group_size={group_size}"
            )
        self.num_channels = num_channels
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c % self.group_size:
            raise ValueError(f"{c} channels are not a multiple of group_size={self.group_size}")
        return F.group_norm(x, c // self.group_size, self.weight[:c], self.bias[:c], self.eps)


class SlimmableModel(nn.Module):
    """Base of models that run at any width ``p`` in (0, 1].

    ``model(x)`` runs at ``model.width`` (1.0 unless :meth:`set_width` changed it), so code
    that knows nothing about widths (``training.evaluate``) evaluates the width that was set;
    ``model(x, width=p)`` runs one pass at ``p`` without changing it. Subclasses implement
    :meth:`forward_width` (the pass at a given width) and :meth:`narrow` (a fresh model built
    with the channel counts of width ``p``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.width = 1.0

    def set_width(self, p: float) -> SlimmableModel:
        """Make ``p`` the width of plain ``model(x)`` calls; returns the model."""
        self.width = check_width(p)
        return self

    def forward(self, x: torch.Tensor, width: float | None = None) -> torch.Tensor:
        return self.forward_width(x, self.width if width is None else check_width(width))

    @abstractmethod
    def forward_width(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """The forward pass of the width-``p`` sub-network."""

    @abstractmethod
    def narrow(self, p: float) -> SlimmableModel:
        """A new, freshly initialised model whose layers have the width-``p`` channel counts."""

    def submodel_shapes(self, p: float) -> dict[str, tuple[int, ...]]:
        """Shape of every state entry of the width-``p`` sub-model (built on the meta device,
        so nothing is allocated)."""
        with torch.device("meta"):
            small = self.narrow(p)
        return {k: tuple(v.shape) for k, v in small.state_dict().items()}

    def submodel(self, p: float) -> SlimmableModel:
        """A stand-alone model of width ``p`` holding copies of the leading weight slices.

        It is an ordinary module of smaller tensors (not a mask over the full model): what a
        member receives as its reward, and it computes exactly what ``self(x, width=p)`` does.
        """
        small = self.narrow(p)
        full = self.state_dict()
        with torch.no_grad():
            for name, target in small.state_dict().items():
                target.copy_(full[name][tuple(slice(0, s) for s in target.shape)])
        return small.to(next(self.parameters()).device)

    def param_fraction(self, p: float) -> float:
        """Share of the full model's parameters (and roughly of its memory) kept at width ``p``."""
        full = sum(v.numel() for v in self.state_dict().values())
        small = sum(math.prod(s) for s in self.submodel_shapes(p).values())
        return small / full


def slice_arrays(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]]) -> Arrays:
    """Copies of the leading corner of each array, cut to ``shapes`` (what a sub-model holds)."""
    out: Arrays = {}
    for name, shape in shapes.items():
        arr = np.asarray(arrays[name])
        if len(shape) != arr.ndim or any(s > a for s, a in zip(shape, arr.shape, strict=True)):
            raise ValueError(f"{name}: cannot cut shape {tuple(shape)} out of {arr.shape}")
        out[name] = arr[tuple(slice(0, s) for s in shape)].copy()
    return out


def submodel_arrays(model: SlimmableModel, arrays: Mapping[str, np.ndarray], p: float) -> Arrays:
    """The width-``p`` sub-model's arrays cut out of the full model's arrays."""
    return slice_arrays(arrays, model.submodel_shapes(p))


def require_slimmable(model: nn.Module) -> SlimmableModel:
    """``model`` itself, or a one-line error naming the slimmable models to use instead."""
    if not isinstance(model, SlimmableModel):
        names = [n for n in registered_models() if n.startswith("slim")]
        raise TypeError(f"{type(model).__name__} is not slimmable; use one of: {', '.join(names)}")
    return model


class SlimCNN(SlimmableModel):
    """Two 3x3 conv blocks (conv, ReLU, 2x2 max-pool) and two linear layers, all slimmable.

    The slimmable counterpart of :class:`~consortium.models.cnn.SmallCNN` (same layers, same
    parameter count at full width), for 28x28 (Fashion-)MNIST and 8x8 digits. The flattened
    conv features are channel-major, so the leading ``C'·h·w`` inputs of the first linear
    layer are exactly the features of the leading ``C'`` channels.

    Parameters
    ----------
    input_shape
        ``(channels, height, width)``; height and width at least 4.
    num_classes
        Output size (never sliced).
    channels
        Filters of the two conv layers at full width.
    hidden
        Width of the hidden linear layer at full width.
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
            raise ValueError(f"SlimCNN needs images of at least 4x4, got {h}x{w}")
        self.input_shape = (c, h, w)
        self.num_classes = num_classes
        self.channels = (int(channels[0]), int(channels[1]))
        self.hidden = int(hidden)
        self.conv1 = SlimConv2d(c, self.channels[0], 3, padding=1)
        self.conv2 = SlimConv2d(self.channels[0], self.channels[1], 3, padding=1)
        self.fc1 = SlimLinear(self.channels[1] * (h // 4) * (w // 4), self.hidden)
        self.fc2 = SlimLinear(self.hidden, num_classes)

    def _plan(self, p: float) -> tuple[int, int, int]:
        return (
            scaled_channels(self.channels[0], p),
            scaled_channels(self.channels[1], p),
            scaled_channels(self.hidden, p),
        )

    def forward_width(self, x: torch.Tensor, p: float) -> torch.Tensor:
        c1, c2, hid = self._plan(p)
        x = max_pool2d(F.relu(self.conv1(x, c1)), 2)
        x = max_pool2d(F.relu(self.conv2(x, c2)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1), hid))
        return self.fc2(x)

    def narrow(self, p: float) -> SlimCNN:
        c1, c2, hid = self._plan(p)
        return SlimCNN(self.input_shape, self.num_classes, (c1, c2), hid)


class _SlimBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, GroupNorm) on the leading channels of a width."""

    def __init__(self, in_planes: int, planes: int, stride: int, group_size: int) -> None:
        super().__init__()
        self.planes = planes
        self.conv1 = SlimConv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = SlimGroupNorm(planes, group_size)
        self.conv2 = SlimConv2d(planes, planes, 3, padding=1, bias=False)
        self.norm2 = SlimGroupNorm(planes, group_size)
        self.shortcut: nn.ModuleDict | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.ModuleDict(
                {
                    "conv": SlimConv2d(in_planes, planes, 1, stride=stride, bias=False),
                    "norm": SlimGroupNorm(planes, group_size),
                }
            )

    def forward(self, x: torch.Tensor, planes: int) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x, planes)))
        out = self.norm2(self.conv2(out, planes))
        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut["norm"](self.shortcut["conv"](x, planes))
        return F.relu(out + skip)


class SlimResNet18(SlimmableModel):
    """ResNet-18 for CIFAR-sized images with GroupNorm, slimmable in every stage.

    CIFAR layout (3x3 stem, no max-pool), four stages of two basic blocks, global average
    pooling, a linear classifier; GroupNorm with ``group_size`` channels per group instead of
    batch norm (IAFL's CIFAR baseline also uses a GroupNorm ResNet-18), so any width is
    evaluated without calibration.

    Parameters
    ----------
    input_shape
        ``(channels, height, width)``.
    num_classes
        Output size (never sliced).
    channels
        Channels of the stem and the four stages at full width; each a multiple of
        ``group_size``. ``(64, 128, 256, 512)`` is the standard ResNet-18.
    group_size
        Channels per GroupNorm group; widths are rounded up to multiples of it.
    blocks
        Basic blocks per stage (``(2, 2, 2, 2)`` is ResNet-18).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        group_size: int = 8,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if len(channels) != 4 or len(blocks) != 4:
            raise ValueError("SlimResNet18 needs four stage widths and four block counts")
        bad = [c for c in channels if c % group_size]
        if group_size < 1 or bad:
            raise ValueError(f"channels {bad} are not multiples of group_size={group_size}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.channels = tuple(int(c) for c in channels)
        self.group_size = int(group_size)
        self.blocks = tuple(int(b) for b in blocks)
        self.stem = SlimConv2d(input_shape[0], self.channels[0], 3, padding=1, bias=False)
        self.stem_norm = SlimGroupNorm(self.channels[0], self.group_size)
        stages = []
        in_planes = self.channels[0]
        for i, (planes, count) in enumerate(zip(self.channels, self.blocks, strict=True)):
            stride = 1 if i == 0 else 2
            stage = nn.ModuleList()
            for b in range(count):
                stage.append(
                    _SlimBasicBlock(in_planes, planes, stride if b == 0 else 1, self.group_size)
                )
                in_planes = planes
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        self.fc = SlimLinear(self.channels[-1], num_classes)

    def _plan(self, p: float) -> tuple[int, ...]:
        return tuple(scaled_channels(c, p, self.group_size) for c in self.channels)

    def forward_width(self, x: torch.Tensor, p: float) -> torch.Tensor:
        plan = self._plan(p)
        x = F.relu(self.stem_norm(self.stem(x, plan[0])))
        for planes, stage in zip(plan, self.stages, strict=True):
            for block in stage:
                x = block(x, planes)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    def narrow(self, p: float) -> SlimResNet18:
        return SlimResNet18(
            self.input_shape,  # type: ignore[arg-type]
            self.num_classes,
            self._plan(p),  # type: ignore[arg-type]
            self.group_size,
            self.blocks,
        )


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def _register() -> None:
    # Importing this module twice (e.g. from models/__init__ and directly) must not fail.
    known = set(registered_models())
    if "slim_cnn" not in known:
        register_model("slim_cnn", lambda shape, n, **kw: SlimCNN(shape, n, **_tuples(kw)))
    if "slim_resnet18" not in known:
        register_model(
            "slim_resnet18", lambda shape, n, **kw: SlimResNet18(shape, n, **_tuples(kw))
        )


_register()
