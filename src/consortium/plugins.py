"""User extensions: a module that registers methods, models or datasets when imported.

A plugin is any importable module that calls ``register_method`` / ``register_model`` /
``register_dataset`` at import time. It is loaded by name (``consortium --plugin my_pkg.methods``,
``plugins = ["my_pkg.methods"]`` in an experiment file, or the ``CONSORTIUM_PLUGINS`` environment
variable, comma-separated), or declared by an installed package in the ``consortium.plugins``
entry-point group, which is loaded on the first look-up of any registry::

    [project.entry-points."consortium.plugins"]
    my_methods = "my_pkg.methods"
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from consortium.config import ConfigError

log = logging.getLogger("consortium.plugins")

T = TypeVar("T")
GROUP = "consortium.plugins"
ENV = "CONSORTIUM_PLUGINS"
_loaded: set[str] = set()
_entry_points_loaded = False


def load_plugin(name: str) -> None:
    """Import ``name`` (a module, or a ``.py`` file path) once; a failure is one line."""
    if name in _loaded:
        return
    try:
        if name.endswith(".py"):
            path = Path(name).resolve()
            if not path.is_file():
                raise ConfigError(f"plugin {name!r}: no such file")
            sys.path.insert(0, str(path.parent))
            importlib.import_module(path.stem)
        else:
            importlib.import_module(name)
    except ConfigError:
        raise
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"plugin {name!r}: cannot import {err.name!r} (is it installed or on PYTHONPATH?)"
        ) from None
    except Exception as err:  # a plugin's own bug: say whose it is, in one line
        raise ConfigError(f"plugin {name!r} failed to load: {type(err).__name__}: {err}") from None
    _loaded.add(name)


def load_plugins(names: Iterable[str]) -> None:
    """Load every named plugin (see :func:`load_plugin`)."""
    for name in names:
        if name.strip():
            load_plugin(name.strip())


def env_plugins() -> list[str]:
    """Plugins named in ``$CONSORTIUM_PLUGINS``."""
    return [p for p in os.environ.get(ENV, "").split(",") if p.strip()]


def load_entry_points() -> None:
    """Load every installed package's ``consortium.plugins`` entry point (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as err:  # one broken package must not break every command
            log.warning("plugin entry point %s failed to load: %s", ep.value, err)
    load_plugins(env_plugins())


class Registry(Generic[T]):
    """Named entries of one kind (methods, actions, datasets, models), filled by the modules
    that define them.

    The built-in modules are imported on the first look-up, then the installed plugins, so
    importing a registry costs nothing and every look-up sees every entry. Names are
    normalised by ``key`` (datasets accept ``-`` for ``_``); an unknown name is a one-line
    :class:`~consortium.config.ConfigError` listing the known ones.
    """

    def __init__(
        self,
        kind: str,
        builtin: Iterable[str] = (),
        key: Callable[[str], str] = str,
    ) -> None:
        self.kind = kind
        self.builtin = tuple(builtin)
        self.key = key
        self._items: dict[str, T] = {}
        self._loaded = False

    def load(self) -> None:
        """Import the built-in modules and the plugins (once)."""
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin:
            importlib.import_module(module)
        load_entry_points()

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        key = self.key(name)
        if key in self._items and not replace:
            raise ValueError(f"{self.kind} {key!r} is already registered (pass replace=True)")
        self._items[key] = item
        return item

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) in self._items

    def get(self, name: str) -> T:
        key = self.key(name)
        if key not in self._items:
            self.load()
        try:
            return self._items[key]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def items(self) -> dict[str, T]:
        """Every entry by name, sorted (built-ins and plugins loaded)."""
        self.load()
        return dict(sorted(self._items.items()))

    def registered(self) -> list[str]:
        """Names registered so far, without loading anything."""
        return sorted(self._items)
