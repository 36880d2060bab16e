"""Package attributes imported on first use (PEP 562), for packages on a process's hot path.

A Flower member process imports one app module per message; a package ``__init__`` that
imported every submodule would make it pay for all of them. Such a package lists its public
names and the modules defining them, and hands :func:`lazy_exports` its ``__getattr__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path; a leading
    ``.`` is relative to ``package``) when ``name`` is first read, and keeps the value."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = package + module if module.startswith(".") else module
        value = getattr(importlib.import_module(path), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
