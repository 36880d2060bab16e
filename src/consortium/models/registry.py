"""Models by name, so an experiment file can say ``model = "cnn"``.

Later families (slimmable nets, transformer backbones, linear models) register here too; a
builder takes the input shape, the number of classes and its own keyword options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from consortium.models.cnn import MLP, SmallCNN

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(input_shape, num_classes, **options)`` available as ``name``."""
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = builder


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build a registered model; unknown names and options give a one-line error."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available: {', '.join(available_models())}"
        ) from None
    try:
        return builder(tuple(input_shape), num_classes, **options)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from None


register_model("cnn", lambda shape, n, **kw: SmallCNN(shape, n, **_tuples(kw)))
register_model("mlp", lambda shape, n, **kw: MLP(shape, n, **_tuples(kw)))


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
