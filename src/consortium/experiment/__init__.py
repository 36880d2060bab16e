"""Experiments: validated TOML files, the method registry and the runner."""

import consortium.experiment.fairness  # registers Aequa, CGSV and IAFL
import consortium.experiment.fedra  # noqa: F401  (registers FedRA's methods, text data)
from consortium.experiment import mtl as _mtl  # noqa: F401  (registers DMTRL, task data)
from consortium.experiment.config import ConfigError, Experiment, build_experiment
from consortium.experiment.config import load_experiment as _load
from consortium.experiment.methods import (
    Env,
    MethodSpec,
    available_methods,
    method_schemas,
    register_method,
)
from consortium.experiment.runner import ExperimentResult, run_experiment


def load_experiment(path, overrides=()):  # type: ignore[no-untyped-def]
    """Read and validate an experiment file against every registered method."""
    return _load(path, method_schemas(), list(overrides))


def experiment_from_dict(raw: dict) -> Experiment:  # type: ignore[type-arg]
    """Validate an experiment given as a dict (what a TOML file would hold)."""
    return build_experiment(raw, method_schemas())


__all__ = [
    "ConfigError",
    "Env",
    "Experiment",
    "ExperimentResult",
    "MethodSpec",
    "available_methods",
    "experiment_from_dict",
    "load_experiment",
    "method_schemas",
    "register_method",
    "run_experiment",
]
