"""The application layer: experiment files, the runner, post-hoc actions and the Flower app
layer. This is where methods (``consortium.algorithms``), data, models and runtimes meet.
Names are imported on first use: a Flower member process imports
``consortium.experiment.flower`` once per message and should pay only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consortium.core.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "ActionSpec": "consortium.algorithms.registry",
    "MethodContext": "consortium.algorithms.registry",
    "MethodSpec": "consortium.algorithms.registry",
    "available_methods": "consortium.algorithms.registry",
    "get_method": "consortium.algorithms.registry",
    "register_action": "consortium.algorithms.registry",
    "register_method": "consortium.algorithms.registry",
    "ConfigError": "consortium.config",
    "run_action": "consortium.experiment.actions",
    "Prepared": "consortium.experiment.checks",
    "prepare_experiment": "consortium.experiment.checks",
    "Experiment": "consortium.experiment.config",
    "FederationSection": "consortium.experiment.config",
    "ModelSection": "consortium.experiment.config",
    "build_experiment": "consortium.experiment.config",
    "load_experiment": "consortium.experiment.config",
    "execute": "consortium.experiment.execution",
    "make_grid": "consortium.experiment.execution",
    "method_context": "consortium.experiment.execution",
    "ExperimentResult": "consortium.experiment.runner",
    "ExperimentStopped": "consortium.experiment.runner",
    "check_experiment": "consortium.experiment.runner",
    "run_experiment": "consortium.experiment.runner",
    "load_model": "consortium.experiment.results",
}

if TYPE_CHECKING:
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
    from consortium.experiment.checks import Prepared, prepare_experiment
    from consortium.experiment.config import (
        Experiment,
        FederationSection,
        ModelSection,
        build_experiment,
        load_experiment,
    )
    from consortium.experiment.execution import execute, make_grid, method_context
    from consortium.experiment.results import load_model
    from consortium.experiment.runner import (
        ExperimentResult,
        ExperimentStopped,
        check_experiment,
        run_experiment,
    )


__getattr__ = lazy_exports(__name__, _EXPORTS)


def experiment_from_dict(raw: dict) -> Experiment:  # type: ignore[type-arg]
    """Validate an experiment given as a dict (what a TOML file would hold)."""
    from consortium.experiment.config import build_experiment

    return build_experiment(raw)


__all__ = [
    "ActionSpec",
    "ConfigError",
    "Experiment",
    "ExperimentResult",
    "ExperimentStopped",
    "FederationSection",
    "MethodContext",
    "MethodSpec",
    "ModelSection",
    "Prepared",
    "available_methods",
    "build_experiment",
    "check_experiment",
    "execute",
    "experiment_from_dict",
    "get_method",
    "load_experiment",
    "load_model",
    "make_grid",
    "method_context",
    "prepare_experiment",
    "register_action",
    "register_method",
    "run_action",
    "run_experiment",
]
