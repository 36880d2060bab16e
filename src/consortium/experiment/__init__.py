"""The application layer: experiment files, the runner, post-hoc actions and the Flower app
layer. This is where methods (``consortium.algorithms``), data, models and runtimes meet."""

from consortium.algorithms.registry import (
    ActionSpec,
    MethodContext,
    MethodSpec,
    available_methods,
    get_method,
    register_action,
    register_method,
)
from consortium.config import ConfigError
from consortium.experiment.actions import run_action
from consortium.experiment.config import (
    Experiment,
    FederationSection,
    ModelSection,
    build_experiment,
    load_experiment,
)
from consortium.experiment.execution import execute, make_grid, method_context
from consortium.experiment.results import load_model
from consortium.experiment.runner import ExperimentResult, run_experiment


def experiment_from_dict(raw: dict) -> Experiment:  # type: ignore[type-arg]
    """Validate an experiment given as a dict (what a TOML file would hold)."""
    return build_experiment(raw)


__all__ = [
    "ActionSpec",
    "ConfigError",
    "Experiment",
    "ExperimentResult",
    "FederationSection",
    "MethodContext",
    "MethodSpec",
    "ModelSection",
    "available_methods",
    "build_experiment",
    "execute",
    "experiment_from_dict",
    "get_method",
    "load_experiment",
    "load_model",
    "make_grid",
    "method_context",
    "register_action",
    "register_method",
    "run_action",
    "run_experiment",
]
