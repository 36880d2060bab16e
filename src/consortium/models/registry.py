"""Models by name, so an experiment file can say ``model = "cnn"``.

Later families (slimmable nets, transformer backbones, linear models) register here too; a
builder takes the input shape, the number of classes and its own keyword options.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from consortium.models.cnn import MLP, SmallCNN

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}
#: Modules that register more built-in models when imported (loaded on the first look-up).
BUILTIN_MODULES: tuple[str, ...] = ("consortium.models.slimmable",)
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    from consortium.plugins import load_entry_points

    load_entry_points()


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(input_shape, num_classes, **options)`` available as ``name``."""
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = builder


def registered_models() -> list[str]:
    """Models registered so far (without loading the built-in modules)."""
    return sorted(_BUILDERS)


def available_models() -> list[str]:
    """Registered model names (built-ins and plugins)."""
    _ensure_loaded()
    return sorted(_BUILDERS)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build a registered model; unknown names and options give a one-line error."""
    if name not in _BUILDERS:
        _ensure_loaded()
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
