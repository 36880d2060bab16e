"""Experiment files: one TOML per setting, validated before anything runs.

A typo in a key or a value out of range is a one-line error naming the key, never a traceback
halfway through a run. Method-specific sections (``[fedavg]``, later ``[aequa]``, ...) are
validated by the schema each method registers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from consortium.core.rundir import check_run_name
from consortium.training import LocalTrainConfig


class ConfigError(ValueError):
    """An experiment file or override that cannot be used; the message is one line."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class DataSection(Section):
    """Which data, how it is split among members (see ``consortium.data``)."""

    dataset: str = Field("digits", description="digits | fashion_mnist | mnist5k")
    path: str | None = Field(None, description="folder holding the dataset files, if not standard")
    num_clients: int = Field(10, ge=1, description="number of members")
    partition: Literal["iid", "homogeneous", "dirichlet", "quantity", "label_k", "groups"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (label skew)")
    beta: float = Field(0.5, gt=0, description="Dirichlet concentration (quantity skew)")
    k: int = Field(2, ge=1, description="classes per member for label_k")
    min_size: int = Field(10, ge=0, description="minimum samples per member")
    client_test_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of a member's data held out for its test view"
    )
    server_val_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the pool held by the server for validation"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="global test share when the data has no official test split"
    )
    max_samples: int | None = Field(
        None, ge=1, description="subsample the training pool (quick runs)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="options of datasets that take their own (e.g. synthetic generators)",
    )


class ModelSection(Section):
    name: str = Field("cnn", description="a registered model: cnn | mlp | ...")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the model"
    )


class TrainSection(Section):
    """Local optimisation, shared by every method of the experiment."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    def local(self) -> LocalTrainConfig:
        return LocalTrainConfig(**self.model_dump())


class FederationSection(Section):
    """Rounds, sampling and what the runtime simulates."""

    rounds: int = Field(20, ge=1)
    clients_per_round: int | float = Field(1.0, description="count, or fraction in (0, 1]")
    failure_rate: float = Field(0.0, ge=0, lt=1, description="chance a member drops out of a round")
    min_replies: int = Field(1, ge=0, description="fewer valid replies skip the round")
    max_reply_mb: float | None = Field(
        None, gt=0, description="replies above this size are rejected"
    )
    eval_every: int = Field(1, ge=1)
    member_timeout: float | None = Field(None, gt=0, description="seconds a member may take")
    runtime: Literal["local", "flower-simulation"] = Field(
        "local", description="local (in-process) | flower-simulation (Ray; consortium[flower])"
    )
    simulation_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (default: all)")
    cpus_per_client: float = Field(1.0, gt=0, description="CPUs per simulated member")
    gpus_per_client: float = Field(0.0, ge=0, description="GPUs per simulated member")

    @model_validator(mode="after")
    def _check_sampling(self) -> FederationSection:
        c = self.clients_per_round
        if isinstance(c, float) and not 0 < c <= 1:
            raise ValueError(f"clients_per_round as a fraction must be in (0, 1], got {c}")
        if isinstance(c, int) and c < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {c}")
        if self.runtime != "local" and self.failure_rate > 0:
            raise ValueError("failure_rate (simulated dropouts) needs runtime = 'local'")
        return self


UNLEARNING_METHODS = (
    "selective",
    "selective_server",
    "retrain",
    "finetune",
    "gradient_ascent",
    "tfidf_prune",
)


class UnlearnSection(Section):
    """A right-to-be-forgotten request run on a trained model (``consortium unlearn`` or an
    ``[unlearn]`` table in the experiment)."""

    kind: Literal["class", "class_at_client", "client", "samples"] = "class"
    class_id: int | None = Field(None, ge=0, description="class to forget")
    client_id: int | None = Field(None, ge=0, description="member whose data is forgotten")
    sample_ids: list[int] = Field(default_factory=list, description="pool ids (samples requests)")
    source: str = Field("fedavg", description="method folder whose model.npz is unlearned")
    _plain_source = field_validator("source")(lambda v: check_run_name(v, "source"))
    methods: list[str] = Field(default_factory=lambda: list(UNLEARNING_METHODS), min_length=1)
    score: Literal["ablation", "taylor", "tfidf"] = "ablation"
    retain_fraction: float = Field(1.0, gt=0, le=1, description="share of retained data per round")
    explain_samples: int = Field(
        64, ge=1, description="forget / retained samples scored per member"
    )
    contrast: bool = True
    ratio: float = Field(0.1, gt=0, le=1, description="fraction of channels fine-tuned")
    per_layer: bool = True
    rounds: int = Field(2, ge=1, description="selective fine-tuning rounds")
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.01, gt=0)
    forget_loss: Literal["random_label", "ascent", "uniform"] = "random_label"
    forget_weight: float = Field(1.0, ge=0)
    baseline_rounds: int = Field(2, ge=1, description="fine-tune / ascent / prune rounds")
    retrain_rounds: int | None = Field(None, ge=1, description="default: federation.rounds")
    shadow_attack: bool = True

    @model_validator(mode="after")
    def _check(self) -> UnlearnSection:
        unknown = [m for m in self.methods if m not in UNLEARNING_METHODS]
        if unknown:
            raise ValueError(
                f"unknown unlearning method {unknown[0]!r}; "
                f"choose from {', '.join(UNLEARNING_METHODS)}"
            )
        if self.kind in ("class", "class_at_client") and self.class_id is None:
            raise ValueError(f"a {self.kind} request needs class_id")
        if self.kind != "class" and self.client_id is None:
            raise ValueError(f"a {self.kind} request needs client_id")
        if self.kind == "samples" and not self.sample_ids:
            raise ValueError("a samples request needs sample_ids")
        return self


class Experiment(Section):
    """A whole experiment: data, model, training, federation and the methods to compare."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    _plain_name = field_validator("name")(lambda v: check_run_name(v, "name"))
    seed: int = Field(0, ge=0)
    methods: list[str] = Field(default_factory=lambda: ["fedavg"], min_length=1)
    output_dir: str = "runs"
    device: str = "auto"
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    federation: FederationSection = Field(default_factory=FederationSection)
    unlearn: UnlearnSection | None = None
    method_options: dict[str, Any] = Field(default_factory=dict, exclude=True)

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved configuration, method sections included, ready to write as TOML."""
        out = self.model_dump(exclude_none=True)
        for name, opts in self.method_options.items():
            out[name] = opts.model_dump(exclude_none=True)
        return out


def _format_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{where or 'config'}: {msg}{extra}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` with ``value`` read as a TOML value (bare words become strings)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def build_experiment(raw: dict[str, Any], method_schemas: dict[str, type[BaseModel]]) -> Experiment:
    """Validate a raw config dict; method sections go to their registered schemas."""
    raw = dict(raw)
    sections = {name: raw.pop(name) for name in list(raw) if name in method_schemas}
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    unknown = [m for m in exp.methods if m not in method_schemas]
    if unknown:
        raise ConfigError(
            f"methods: unknown method {unknown[0]!r}; "
            f"available: {', '.join(sorted(method_schemas))}"
        )
    if len(set(exp.methods)) != len(exp.methods):
        raise ConfigError("methods: a method is listed twice")
    options: dict[str, Any] = {}
    for name in sorted(set(exp.methods) | set(sections)):
        section = sections.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a table of options")
        try:
            options[name] = method_schemas[name].model_validate(section)
        except ValidationError as err:
            raise ConfigError(_format_error(err, name)) from None
    exp.method_options = options
    return exp


def load_experiment(
    path: str | Path,
    method_schemas: dict[str, type[BaseModel]],
    overrides: list[str] = (),  # type: ignore[assignment]
) -> Experiment:
    """Read, override and validate an experiment file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such experiment file")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return build_experiment(apply_overrides(raw, list(overrides)), method_schemas)
