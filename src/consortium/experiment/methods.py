"""Methods an experiment file can name, each with its options section and a builder.

A builder turns the experiment's shared pieces (data, model, local training) and the method's
own section into a workflow and the member handlers it needs. Adding a method is one
registration; the runner, the CLI and the reports need no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from torch import nn

from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.algorithms.reference import (
    Centralised,
    CentralisedConfig,
    Standalone,
    StandaloneConfig,
    standalone_client_app,
)
from consortium.algorithms.supervised import supervised_client_app
from consortium.core.client import ClientApp
from consortium.core.workflow import Workflow
from consortium.experiment.config import Experiment, Section
from consortium.models import build_model


@dataclass
class Env:
    """What every builder gets: the validated experiment and the federated data."""

    experiment: Experiment
    data: Any  # a FederatedData, or what a registered data builder returned

    def model_fn(self) -> Callable[[], nn.Module]:
        m, d = self.experiment.model, self.data
        return lambda: build_model(m.name, d.input_shape, d.num_classes, **m.options)


Builder = Callable[[Env, Any], tuple[Workflow, ClientApp]]


RunReport = Callable[[Path], Any]


@dataclass(frozen=True)
class MethodSpec:
    """A method experiments can name.

    ``report``, when given, draws the family's own outputs (plots, tables) from the finished
    run folder; the runner calls each distinct one once, after every method has run, so a
    family's report can compare its methods.
    """

    name: str
    options: type[Section]
    build: Builder
    description: str
    report: RunReport | None = None


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec


def get_method(name: str) -> MethodSpec:
    return _METHODS[name]


def method_schemas() -> dict[str, type[Section]]:
    return {name: spec.options for name, spec in _METHODS.items()}


def available_methods() -> dict[str, str]:
    return {name: spec.description for name, spec in sorted(_METHODS.items())}


# --- the foundation's methods -------------------------------------------------------------


class FedAvgOptions(Section):
    prox_mu: float = Field(0.0, ge=0, description="FedProx proximal coefficient (0 = FedAvg)")
    weighted: bool = Field(True, description="weight updates by member sample counts")
    evaluate_clients: bool = Field(True, description="final evaluation on every member's test view")


def _build_fedavg(env: Env, opts: FedAvgOptions) -> tuple[Workflow, ClientApp]:
    exp, fed = env.experiment, env.experiment.federation
    cfg = FedAvgConfig(
        rounds=fed.rounds,
        clients_per_round=fed.clients_per_round,
        local=exp.train.local(),
        prox_mu=opts.prox_mu,
        weighted=opts.weighted,
        eval_every=fed.eval_every,
        evaluate_clients=opts.evaluate_clients,
    )
    model_fn = env.model_fn()
    wf = FedAvg(cfg, model_fn, env.data.test_x, env.data.test_y, exp.device)
    return wf, supervised_client_app(model_fn, exp.device)


class NoOptions(Section):
    pass


def _build_standalone(env: Env, _: NoOptions) -> tuple[Workflow, ClientApp]:
    exp = env.experiment
    model_fn = env.model_fn()
    cfg = StandaloneConfig(rounds=exp.federation.rounds, local=exp.train.local())
    wf = Standalone(cfg, model_fn, env.data.test_x, env.data.test_y, exp.device)
    return wf, standalone_client_app(model_fn, exp.device)


def _build_centralised(env: Env, _: NoOptions) -> tuple[Workflow, ClientApp]:
    exp, d = env.experiment, env.data
    model_fn = env.model_fn()
    cfg = CentralisedConfig(rounds=exp.federation.rounds, local=exp.train.local())
    wf = Centralised(
        cfg, model_fn, d.pool_x, d.pool_y, d.pooled_train_indices(), d.test_x, d.test_y, exp.device
    )
    return wf, supervised_client_app(model_fn, exp.device)


register_method(
    MethodSpec(
        "fedavg", FedAvgOptions, _build_fedavg, "federated averaging (FedProx with prox_mu > 0)"
    )
)
register_method(
    MethodSpec(
        "standalone", NoOptions, _build_standalone, "each member trains alone on its own data"
    )
)
register_method(
    MethodSpec(
        "centralised",
        NoOptions,
        _build_centralised,
        "one model on all members' data pooled (reference)",
    )
)
