"""Methods and post-hoc actions register themselves here, from their own packages.

A method is a name, one options class (it validates the method's TOML section and is what Python
users pass), a builder that turns the experiment's shared pieces into a workflow and member
handlers, and optionally the name of a family report. An *action* (unlearning) runs on a
finished run instead of training one. Nothing outside a method's package declares its options
or knows how to build it, so adding a method is adding a folder (see docs/adding-a-method.md).

Built-in packages are imported on the first look-up; third-party packages register through the
``consortium.plugins`` entry-point group or :func:`consortium.plugins.load_plugins`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium.config import Options
from consortium.core.client import ClientApp
from consortium.core.run import RunResult
from consortium.core.workflow import Workflow
from consortium.plugins import Registry

#: Packages that register the built-in methods and actions when imported.
BUILTIN_PACKAGES: tuple[str, ...] = (
    "consortium.algorithms.fedavg",
    "consortium.algorithms.reference",
    "consortium.algorithms.aequa",
    "consortium.algorithms.cgsv",
    "consortium.algorithms.iafl",
    "consortium.algorithms.fedra",
    "consortium.algorithms.mtl",
    "consortium.algorithms.unlearning",
    "consortium.algorithms.scaffold",
)


@dataclass
class MethodContext:
    """What every builder gets besides its own options.

    Attributes
    ----------
    data
        The federated data (a ``FederatedData``, a ``MultiTaskData``, ... as the dataset built).
    model_fn
        Builds the experiment's (untrained) model, from its ``[model]`` table.
    device
        ``auto``, ``cpu``, ``cuda``, ...
    seed
        The run seed.
    cache
        Shared by the methods of one experiment run, for phases they share (the fair-reward
        family's standalone phase, multi-task λ selection). Keys are the family's to choose.
    """

    data: Any
    model_fn: Callable[[], Any]
    device: str = "auto"
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[MethodContext, Any], tuple[Workflow, ClientApp]]


@dataclass(frozen=True)
class MethodSpec:
    """A method experiments can name.

    ``report`` names a family report of :mod:`consortium.report` (``"fairness"``, ``"fedra"``,
    ``"mtl"``) or is a callable ``report(run_dir)``; it runs once per family after all methods
    of an experiment ran, so it can compare them. ``check(experiment, options)`` refuses, with
    a one-line ``ValueError``, an experiment the method cannot run as configured (Aequa without
    a server validation split); it runs when the experiment is validated, before anything runs.
    """

    name: str
    config: type[Options]
    build: Builder
    description: str
    report: str | Callable[[Path], Any] | None = None
    check: Callable[[Any, Any], None] | None = None


@dataclass
class ActionContext(MethodContext):
    """What a post-hoc action gets: a method's context plus the finished run and a way to run
    workflows on the experiment's configured runtime.

    Attributes
    ----------
    run_dir
        The finished run the action works on.
    train
        The experiment's local training settings (``[train]``).
    rounds
        The experiment's ``federation.rounds``.
    execute
        ``execute(workflow, app, run_dir, resume=..., description=...)`` runs a workflow on the
        configured runtime (in-process or Flower) and returns its :class:`RunResult`.
    say
        Prints a line for the user (progress of long phases).
    progress
        Whether progress bars are shown.
    """

    run_dir: Path = Path(".")
    train: Any = None
    rounds: int = 1
    execute: Callable[..., RunResult] | None = None
    say: Callable[[str], None] = print
    progress: bool = True


@dataclass(frozen=True)
class ActionSpec:
    """A post-hoc action on a finished run (``consortium <name> RUN_DIR ...`` and an optional
    ``[<name>]`` table in an experiment file).

    ``run(ctx, config, dest, resume)`` writes its results into ``dest`` and returns the
    summaries; ``dest(run_dir, config)`` names that folder; ``client_app(ctx, config)`` builds
    the member handlers (a runtime that rebuilds members elsewhere needs it); ``check(run_dir,
    config)`` refuses a request before any data is built; ``add_arguments`` /
    ``overrides`` turn command-line flags into ``<name>.*`` settings; ``report`` names the
    report of :mod:`consortium.report` that renders ``dest``; ``hint`` is the one-line error of
    a command line that asked for nothing.
    """

    name: str
    config: type[Options]
    run: Callable[[ActionContext, Any, Path, bool], dict[str, Any]]
    dest: Callable[[Path, Any], Path]
    client_app: Callable[[MethodContext, Any], ClientApp]
    description: str
    check: Callable[[Path, Any], None] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    overrides: Callable[[argparse.Namespace], list[str]] | None = None
    report: str | None = None
    hint: str = "say what to do"


_METHODS: Registry[MethodSpec] = Registry("method", BUILTIN_PACKAGES)
_ACTIONS: Registry[ActionSpec] = Registry("action", BUILTIN_PACKAGES)


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Make ``spec`` available by name; a clash is an error unless ``replace`` is given."""
    if spec.name in _ACTIONS:
        raise ValueError(f"{spec.name!r} is already an action")
    return _METHODS.register(spec.name, spec, replace=replace)


def register_action(spec: ActionSpec, *, replace: bool = False) -> ActionSpec:
    """Make a post-hoc action available by name (see :class:`ActionSpec`)."""
    if spec.name in _METHODS:
        raise ValueError(f"{spec.name!r} is already a method")
    return _ACTIONS.register(spec.name, spec, replace=replace)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name is a one-line error listing the rest."""
    return _METHODS.get(name)


def get_action(name: str) -> ActionSpec:
    return _ACTIONS.get(name)


def methods() -> Mapping[str, MethodSpec]:
    """Every registered method by name (built-ins and plugins)."""
    return _METHODS.items()


def actions() -> Mapping[str, ActionSpec]:
    return _ACTIONS.items()


def available_methods() -> dict[str, str]:
    """Method name -> one-line description."""
    return {name: spec.description for name, spec in methods().items()}
