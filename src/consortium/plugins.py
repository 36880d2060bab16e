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
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from consortium.config import ConfigError

log = logging.getLogger("consortium.plugins")

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
