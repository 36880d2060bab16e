"""The fair-reward family as experiment methods: ``aequa``, ``aequa_training_time``, ``cgsv``,
``iafl`` (``fedavg`` and ``standalone`` are the foundation's).

Each method has its own options section (``[aequa]``, ``[cgsv]``, ...). Every method of this
family runs the same standalone phase (members training alone: IPR's baseline and the default
contribution measure); it is determined by the seed, the data and the settings, so within one
experiment it runs once and the others reuse its result.

Summaries hold ``test_accuracy`` (full-width / server model), ``mean_client_accuracy`` and
``client_accuracy`` (reward models on members' own test views), ``pearson``, ``ipr``,
``contributions`` and, for Aequa, ``widths`` (see ``consortium.algorithms.aequa.rewards``).
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Literal

from pydantic import Field, model_validator

from consortium.algorithms.aequa import (
    Aequa,
    AequaConfig,
    AequaTrainingTime,
    AllocationConfig,
    ContributionConfig,
    aequa_client_app,
)
from consortium.algorithms.cgsv import CGSV, CGSVConfig, own_model_client_app
from consortium.algorithms.iafl import IAFL, IAFLConfig
from consortium.core.client import ClientApp
from consortium.core.workflow import Workflow
from consortium.experiment.config import Section
from consortium.experiment.methods import Env, MethodSpec, register_method
from consortium.models import slimmable  # noqa: F401  (registers slim_cnn, slim_resnet18)
from consortium.report.fairness_plots import write_run_fairness_plots

Kind = Literal["data_size", "standalone", "cgsv", "given"]


class ContributionOptions(Section):
    """Contribution fields shared by the family's sections."""

    contribution: Kind = Field(
        "standalone",
        description="data_size | standalone (accuracy alone, on the server validation split) "
        "| cgsv (cosine EMA, online) | given",
    )
    contribution_values: list[float] = Field(
        default_factory=list, description="one value per member for contribution = given"
    )
    contribution_alpha: float = Field(0.95, ge=0, lt=1, description="EMA factor of cgsv")
    measure_standalone: bool = Field(
        True, description="members train alone once first (IPR; standalone contributions)"
    )

    def contribution_config(self) -> ContributionConfig:
        return ContributionConfig(
            kind=self.contribution,
            values=tuple(self.contribution_values),
            alpha=self.contribution_alpha,
        )

    @model_validator(mode="after")
    def _check_given(self) -> ContributionOptions:
        if self.contribution == "given" and not self.contribution_values:
            raise ValueError("contribution = 'given' needs contribution_values")
        return self


class AequaOptions(ContributionOptions):
    p_min: float = Field(0.1, gt=0, le=1, description="narrowest width trained and rewarded")
    width_rule: Literal["random", "sandwich"] = Field(
        "random", description="random: full + U[p_min,1] widths; sandwich: + p_min too"
    )
    num_random: int = Field(1, ge=0, description="random widths per batch")
    distill: bool = Field(False, description="in-place distillation for sub-widths")
    temperature: float = Field(1.0, gt=0, description="distillation temperature")
    sub_batch: float = Field(
        1.0, gt=0, le=1, description="share of each batch the sub-widths train on"
    )
    weighted: bool = Field(True, description="weight updates by member sample counts")
    grid_step: float = Field(0.01, gt=0, le=1, description="width grid of the reward curve")
    normalisation: Literal["minmax", "max"] = "max"
    rule: Literal["nearest", "first_reaching"] = "nearest"
    evaluate_clients: bool = Field(True, description="members evaluate their rewards")
    warmup_rounds: int = Field(2, ge=0, description="training-time: full-width rounds first")
    curve_step: float = Field(0.1, gt=0, le=1, description="training-time: per-round grid")


class CGSVOptions(ContributionOptions):
    gamma: float = Field(0.5, ge=0, description="norm updates are rescaled to (0: off)")
    alpha: float = Field(0.95, ge=0, lt=1, description="reputation moving average")
    beta: float = Field(1.0, gt=0, description="altruism degree of tanh(beta r)")


class IAFLOptions(ContributionOptions):
    contribution: Kind = Field("data_size", description="data_size | standalone | given")
    kappa: float = Field(0.0, ge=0, le=1, description="sharing parameter")
    q: float = Field(0.0, ge=0, le=1, description="probability of a reset to the server model")
    gamma: float = Field(0.0, ge=0, description="norm updates are rescaled to (0: off)")

    @model_validator(mode="after")
    def _no_online(self) -> IAFLOptions:
        if self.contribution == "cgsv":
            raise ValueError("iafl needs contributions known before training (not cgsv)")
        return self


# One standalone result per (data object, settings): methods of one experiment share it.
_CACHES: dict[str, tuple[weakref.ref, dict[str, Any]]] = {}


def standalone_cache(env: Env) -> dict[str, Any]:
    """The cache shared by this experiment's fair-reward methods (same data object, seed,
    model and local training)."""
    exp = env.experiment
    key = json.dumps(
        [
            id(env.data),
            exp.seed,
            exp.model.model_dump(),
            exp.train.model_dump(),
            exp.federation.rounds,
        ],
        sort_keys=True,
        default=str,
    )
    entry = _CACHES.get(key)
    if entry is None or entry[0]() is not env.data:
        for k in [k for k, (ref, _) in _CACHES.items() if ref() is None]:
            del _CACHES[k]
        entry = (weakref.ref(env.data), {})
        _CACHES[key] = entry
    return entry[1]


def _aequa_config(env: Env, opts: AequaOptions) -> AequaConfig:
    exp, fed = env.experiment, env.experiment.federation
    return AequaConfig(
        rounds=fed.rounds,
        clients_per_round=fed.clients_per_round,
        local=exp.train.local(),
        p_min=opts.p_min,
        width_rule=opts.width_rule,
        num_random=opts.num_random,
        distill=opts.distill,
        temperature=opts.temperature,
        sub_batch=opts.sub_batch,
        weighted=opts.weighted,
        contribution=opts.contribution_config(),
        allocation=AllocationConfig(
            grid_step=opts.grid_step, normalisation=opts.normalisation, rule=opts.rule
        ),
        measure_standalone=opts.measure_standalone,
        evaluate_clients=opts.evaluate_clients,
        eval_every=fed.eval_every,
        warmup_rounds=opts.warmup_rounds,
        curve_step=opts.curve_step,
    )


def _build_aequa(training_time: bool):
    def build(env: Env, opts: AequaOptions) -> tuple[Workflow, ClientApp]:
        d, device = env.data, env.experiment.device
        model_fn = env.model_fn()
        cls = AequaTrainingTime if training_time else Aequa
        wf = cls(
            _aequa_config(env, opts),
            model_fn,
            d.val_x,
            d.val_y,
            d.test_x,
            d.test_y,
            device,
            standalone_cache=standalone_cache(env),
        )
        return wf, aequa_client_app(model_fn, device)

    return build


def _build_cgsv(env: Env, opts: CGSVOptions) -> tuple[Workflow, ClientApp]:
    exp, d = env.experiment, env.data
    cfg = CGSVConfig(
        rounds=exp.federation.rounds,
        clients_per_round=exp.federation.clients_per_round,
        local=exp.train.local(),
        gamma=opts.gamma,
        alpha=opts.alpha,
        beta=opts.beta,
        contribution=opts.contribution_config(),
        measure_standalone=opts.measure_standalone,
        eval_every=exp.federation.eval_every,
    )
    model_fn = env.model_fn()
    wf = CGSV(
        cfg, model_fn, d.val_x, d.val_y, d.test_x, d.test_y, exp.device, standalone_cache(env)
    )
    return wf, own_model_client_app(model_fn, exp.device)


def _build_iafl(env: Env, opts: IAFLOptions) -> tuple[Workflow, ClientApp]:
    exp, d = env.experiment, env.data
    cfg = IAFLConfig(
        rounds=exp.federation.rounds,
        clients_per_round=exp.federation.clients_per_round,
        local=exp.train.local(),
        contribution=opts.contribution_config(),
        kappa=opts.kappa,
        q=opts.q,
        gamma=opts.gamma,
        measure_standalone=opts.measure_standalone,
        eval_every=exp.federation.eval_every,
    )
    model_fn = env.model_fn()
    wf = IAFL(
        cfg, model_fn, d.val_x, d.val_y, d.test_x, d.test_y, exp.device, standalone_cache(env)
    )
    return wf, own_model_client_app(model_fn, exp.device)


register_method(
    MethodSpec(
        "aequa",
        AequaOptions,
        _build_aequa(False),
        "Aequa: slimmable model, width rewards allocated after training",
        write_run_fairness_plots,
    )
)
register_method(
    MethodSpec(
        "aequa_training_time",
        AequaOptions,
        _build_aequa(True),
        "Aequa with training-time rewards: members train the width they earned",
        write_run_fairness_plots,
    )
)
register_method(
    MethodSpec(
        "cgsv",
        CGSVOptions,
        _build_cgsv,
        "CGSV: cosine reputations, masked rewards",
        write_run_fairness_plots,
    )
)
register_method(
    MethodSpec(
        "iafl",
        IAFLOptions,
        _build_iafl,
        "IAFL: shares of others' updates as rewards",
        write_run_fairness_plots,
    )
)
