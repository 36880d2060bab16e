"""Models by name, so an experiment file can say ``model = "cnn"``.

Later families (slimmable nets, transformer backbones, linear models) register here too; a
builder takes the input shape, the number of classes and its own keyword options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from consortium.models.cnn import MLP, SmallCNN
from consortium.plugins import Registry

ModelBuilder = Callable[..., nn.Module]

#: Modules that register more built-in models when imported (loaded on the first look-up).
BUILTIN_MODULES: tuple[str, ...] = ("consortium.models.slimmable",)
_BUILDERS: Registry[ModelBuilder] = Registry("model", BUILTIN_MODULES)


def register_model(name: str, builder: ModelBuilder, *, replace: bool = False) -> None:
    """Make ``builder(input_shape, num_classes, **options)`` available as ``name``."""
    _BUILDERS.register(name, builder, replace=replace)


def registered_models() -> list[str]:
    """Models registered so far (without loading the built-in modules)."""
    return _BUILDERS.registered()


def available_models() -> list[str]:
    """Registered model names (built-ins and plugins)."""
    return list(_BUILDERS.items())


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build a registered model; unknown names and options give a one-line error."""
    builder = _BUILDERS.get(name)
    try:
        return builder(tuple(input_shape), num_classes, **options)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from None


register_model("cnn", lambda shape, n, **kw: SmallCNN(shape, n, **_tuples(kw)))
register_model("mlp", lambda shape, n, **kw: MLP(shape, n, **_tuples(kw)))


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
