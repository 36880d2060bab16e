"""Experiment files: one TOML per setting, validated before anything runs.

A typo in a key or a value out of range is a one-line error naming the key, never a traceback
halfway through a run. The shared tables (``[data]``, ``[model]``, ``[train]``, ``[federation]``)
are declared here or by the layer that owns them; every other table is a method's or an action's
and is validated by the options class that method or action registered.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
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

from consortium.algorithms.base.config import SHARED_FIELDS, ScheduleConfig
from consortium.algorithms.registry import actions, get_action, get_method, methods
from consortium.config import ConfigError, Options, one_line, validate
from consortium.core.rundir import check_run_name
from consortium.data.config import DataConfig
from consortium.data.registry import dataset_options
from consortium.plugins import load_plugins
from consortium.tracking import TrackingConfig
from consortium.training import LocalTrainConfig

__all__ = [
    "ConfigError",
    "Experiment",
    "FederationSection",
    "ModelSection",
    "apply_overrides",
    "build_experiment",
    "load_experiment",
    "parse_override",
]

#: Kept for code that imports the old name: the ``[data]`` table.
DataSection = DataConfig
#: Kept for code that imports the old name: the ``[train]`` table.
TrainSection = LocalTrainConfig


class ModelSection(Options):
    """The ``[model]`` table: a registered model and its keyword options."""

    name: str = Field("cnn", description="a registered model: cnn | mlp | slim_cnn | ...")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the model"
    )


class FederationSection(ScheduleConfig):
    """The ``[federation]`` table: rounds and sampling (shared with every federated method's
    options), and what the runtime simulates."""

    failure_rate: float = Field(0.0, ge=0, lt=1, description="chance a member drops out of a round")
    min_replies: int = Field(
        1, ge=1, description="fewer valid replies skip a round (set-up and final phase: retried)"
    )
    max_reply_mb: float | None = Field(
        None, gt=0, description="replies above this size are rejected"
    )
    member_timeout: float | None = Field(None, gt=0, description="seconds a member may take")
    runtime: Literal["local", "flower-simulation"] = Field(
        "local", description="local (in-process) | flower-simulation (Ray; consortium[flower])"
    )
    simulation_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (default: all)")
    cpus_per_client: float = Field(1.0, gt=0, description="CPUs per simulated member")
    gpus_per_client: float = Field(0.0, ge=0, description="GPUs per simulated member")
    workers: int | None = Field(
        None,
        ge=1,
        description="local runtime: processes training members at once (default: the usable "
        "cores, 1 on CUDA; 1 = in this process)",
    )
    torch_threads: int = Field(
        1, ge=1, description="torch/BLAS threads of the run and each worker (> 1: workers = 1)"
    )
    start_workers_after: float = Field(
        0.5,
        ge=0,
        description="local runtime: member CPU seconds served in the run's process before "
        "the workers start (a short run never pays their start-up; 0: from the first round)",
    )

    @model_validator(mode="after")
    def _check_runtime(self) -> FederationSection:
        if self.runtime != "local" and self.failure_rate > 0:
            raise ValueError("failure_rate (simulated dropouts) needs runtime = 'local'")
        if self.torch_threads > 1 and (self.workers or 1) > 1:
            raise ValueError(
                "torch_threads > 1 needs workers = 1 (torch's threads cannot start in forked "
                "worker processes)"
            )
        return self

    @property
    def max_reply_bytes(self) -> int | None:
        return None if self.max_reply_mb is None else int(self.max_reply_mb * 1e6)


class Experiment(BaseModel):
    """A whole experiment: data, model, training, federation and the methods to compare.

    ``method_options`` holds each method's validated options (its section with the shared
    fields filled in); ``action_options`` each post-hoc action's (``[unlearn]``). Built from
    Python, methods without options get their defaults::

        Experiment(
            name="mine",
            methods=["fedavg", "fedprox"],
            method_options={"fedprox": {"prox_mu": 0.1}},
        )
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    _plain_name = field_validator("name")(lambda v: check_run_name(v, "name"))
    seed: int = Field(0, ge=0, lt=2**32, description="run seed (0 .. 2**32 - 1)")
    methods: list[str] = Field(default_factory=lambda: ["fedavg"], min_length=1)
    plugins: list[str] = Field(
        default_factory=list, description="modules that register methods, models or datasets"
    )
    output_dir: str = "runs"
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: LocalTrainConfig = Field(default_factory=LocalTrainConfig)
    federation: FederationSection = Field(default_factory=FederationSection)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    method_options: dict[str, Any] = Field(default_factory=dict, exclude=True)
    action_options: dict[str, Any] = Field(default_factory=dict, exclude=True)

    def __init__(self, **data: Any) -> None:
        """The typed path: a bad value is a one-line :class:`ConfigError`, as from a file."""
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(one_line(err)) from None

    @model_validator(mode="after")
    def _resolve(self) -> Experiment:
        """Validate every method's and action's options (the typed path included)."""
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: a method is listed twice")
        load_plugins(self.plugins)
        dataset_options(self.data)  # the dataset exists and its options are valid
        options: dict[str, Any] = {}
        for name in [*self.methods, *(m for m in self.method_options if m not in self.methods)]:
            spec = get_method(name)
            options[name] = method_config(
                spec.config, self.method_options.get(name), self.shared(), name
            )
        self.__dict__["method_options"] = options
        acts: dict[str, Any] = {}
        for name, raw in self.action_options.items():
            acts[name] = validate(get_action(name).config, raw, name)
        self.__dict__["action_options"] = acts
        return self

    def shared(self) -> dict[str, Any]:
        """The values every method's shared fields take (see ``SHARED_FIELDS``)."""
        fed = self.federation
        return {
            "rounds": fed.rounds,
            "clients_per_round": fed.clients_per_round,
            "eval_every": fed.eval_every,
            "local": self.train,
        }

    def action(self, name: str) -> Any | None:
        """The options of the post-hoc action ``name`` (``None`` when the file has none)."""
        return self.action_options.get(name)

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved configuration, method sections included, ready to write as TOML."""
        out = self.model_dump(exclude_none=True)
        if not out.get("plugins"):
            out.pop("plugins", None)
        for name, opts in self.method_options.items():
            out[name] = opts.model_dump(exclude=set(SHARED_FIELDS), exclude_none=True)
        for name, opts in self.action_options.items():
            out[name] = opts.model_dump(exclude_none=True)
        return out


def method_config(
    cls: type[BaseModel], section: Mapping[str, Any] | BaseModel | None, shared: dict, where: str
) -> Any:
    """A method's options: its own section, with the experiment's shared fields filled in."""
    if isinstance(section, BaseModel):
        section = section.model_dump(exclude=set(SHARED_FIELDS))
    section = dict(section or {})
    for key in section:
        if key in SHARED_FIELDS:
            table = "[train]" if key == "local" else "[federation]"
            raise ConfigError(f"{where}.{key}: set in {table}, it is shared by every method")
    filled = {k: v for k, v in shared.items() if k in cls.model_fields}
    return validate(cls, {**filled, **section}, where)


def _format_error(err: ValidationError, prefix: str = "") -> str:
    return one_line(err, prefix)


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


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to a raw config dict."""
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


def build_experiment(raw: Mapping[str, Any]) -> Experiment:
    """Validate a raw config dict (what a TOML file holds); every error is one line."""
    raw = dict(raw)
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError("plugins: expected a list of module names")
    load_plugins(plugins)
    known_methods, known_actions = methods(), actions()
    method_sections = {n: raw.pop(n) for n in list(raw) if n in known_methods}
    action_sections = {n: raw.pop(n) for n in list(raw) if n in known_actions}
    for name, section in [*method_sections.items(), *action_sections.items()]:
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a table of options")
    listed = raw.get("methods", ["fedavg"])
    if isinstance(listed, list):
        for m in listed:
            if isinstance(m, str) and m not in known_methods:
                raise ConfigError(
                    f"methods: unknown method {m!r}; available: {', '.join(known_methods)}"
                )
    raw["method_options"] = method_sections
    raw["action_options"] = action_sections
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None
    return exp


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> Experiment:
    """Read, override and validate an experiment file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such experiment file")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read: {err}") from None
    return build_experiment(apply_overrides(raw, overrides))
