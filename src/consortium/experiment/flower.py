"""Experiment files on Flower: the app objects ``flwr run`` loads, the app folder writer, and
the simulation entry point of :func:`consortium.experiment.execution.execute`.

This is the application layer of the Flower runtime (it reads experiment files and builds
methods, as ``consortium.experiment.runner`` does in-process); the runtime proper
(``consortium.runtime.flower``: grid, apps, records) knows no experiment and no algorithm.

A Flower app folder written by :func:`write_flower_app` holds one ``pyproject.toml`` whose
components point at :data:`serverapp` and :data:`clientapp` below and whose run config holds
the resolved experiment:

=================== ==========================================================================
run config key      meaning
=================== ==========================================================================
``experiment``      the experiment, as TOML text (what ``consortium run`` would read)
``method``          which of the experiment's methods this Flower run runs
``run-dir``         the server's run folder (relative paths: to the SuperLink's working folder)
``data-path``       the server's dataset folder, if not the experiment's ``data.path``
``reply-timeout``   seconds to wait for one exchange's replies (0: until Flower reports them)
``connect-timeout`` seconds to wait for every member's SuperNode to join
``resume``          continue the run in ``run-dir`` from its last checkpoint
``roster``          the server's roster file: member id = registered SuperNode key (a
                    deployment maps nodes to members by it; empty: by their partition-id)
=================== ==========================================================================

A method whose options say ``secure_aggregation = true`` (FedAvg, FedProx) runs with SecAgg+:
the app's client component is :data:`clientapp_secure` (Flower's ``secaggplus_mod`` around
every handler) and the server asks for the mean of the members' models through the protocol.

Each SuperNode says which member it is with ``--node-config``:

=================== ==========================================================================
node config key     meaning
=================== ==========================================================================
``partition-id``    the member id, ``0 .. num-partitions - 1`` (required)
``num-partitions``  the number of members (must equal the experiment's ``data.num_clients``)
``data-path``       this machine's dataset folder, if not the experiment's ``data.path``
``device``          ``cpu``, ``cuda``, ``cuda:1``, ... (default: the experiment's ``device``)
=================== ==========================================================================
"""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from consortium.core.grid import held_examples
from consortium.core.run import METRICS, MODEL, STOPPED, SUMMARY, RunResult, RunStopped, read_jsonl
from consortium.runtime.flower.apps import (
    AppSettings,
    Member,
    ServerRun,
    flower_client_app,
    flower_server_app,
)
from consortium.runtime.flower.secagg import SecureAggregation

MODULE = "consortium.experiment.flower"


def _experiment(settings: AppSettings) -> Any:
    from consortium.experiment.config import build_experiment

    text = settings.run_config.get("experiment")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "the Flower run config has no 'experiment': write the app with "
            "consortium.experiment.flower.write_flower_app (or `consortium flower app`)"
        )
    return build_experiment(tomllib.loads(text))


def _with_overrides(exp: Any, data_path: Any = None, device: Any = None) -> Any:
    if data_path:
        exp = exp.model_copy(update={"data": exp.data.model_copy(update={"path": str(data_path)})})
    if device:
        exp = exp.model_copy(update={"device": str(device)})
    return exp


def _method(exp: Any, settings: AppSettings) -> str:
    method = str(settings.run_config.get("method") or exp.methods[0])
    if method not in exp.method_options and not method.startswith("action:"):
        raise ValueError(f"run config method {method!r} is not one of {exp.methods}")
    return method


def _build(exp: Any, target: str) -> tuple[Any, Any, Any]:
    """(data, workflow or None, member app) of a method, or of an action (``action:NAME``)."""
    from consortium.algorithms.registry import get_action, get_method
    from consortium.data.registry import build_data
    from consortium.experiment.execution import method_context

    data = build_data(exp.data, exp.seed)
    ctx = method_context(exp, data)
    if target.startswith("action:"):
        name = target.removeprefix("action:")
        return data, None, get_action(name).client_app(ctx, exp.action(name))
    workflow, app = get_method(target).build(ctx, exp.method_options[target])
    return data, workflow, app


def member_sizes(data: Any) -> dict[int, int | None]:
    """Samples each member holds (what the server caps reported counts at), where the server
    can tell (see :func:`_held_by_server`)."""
    return {c: _held_by_server(data, c) for c in range(data.num_clients)}


def secure_settings(exp: Any, method: str) -> SecureAggregation | None:
    """SecAgg+ settings for a method whose options ask for secure aggregation, else ``None``."""
    options = exp.method_options.get(method)
    return SecureAggregation() if getattr(options, "secure_aggregation", False) else None


def experiment_server_run(settings: AppSettings) -> ServerRun:
    """The server side of an experiment's method, from a Flower run config."""
    rc = settings.run_config
    exp = _with_overrides(_experiment(settings), rc.get("data-path"))
    method = _method(exp, settings)
    data, workflow, _ = _build(exp, method)
    fed = exp.federation
    timeout = float(rc.get("reply-timeout", 0) or 0)
    run_dir = str(rc.get("run-dir") or "") or str(Path(exp.output_dir) / exp.name / method)
    return ServerRun(
        workflow=workflow,
        num_clients=data.num_clients,
        seed=exp.seed,
        min_replies=fed.min_replies,
        max_reply_bytes=fed.max_reply_bytes,
        reply_timeout=timeout if timeout > 0 else None,
        connect_timeout=float(rc.get("connect-timeout", 300.0)),
        run_dir=run_dir,
        resume=bool(rc.get("resume", False)),
        progress=False,
        description=method,
        data_sizes=member_sizes(data),
        secure_aggregation=secure_settings(exp, method),
    )


def _held_by_server(data: Any, cid: int) -> int | None:
    """Member ``cid``'s sample count when the server can compute it (a partition of a pool
    every machine loads); ``None`` when only the member holds its data (``SiteData``)."""
    try:
        return held_examples(data.client(cid))
    except FileNotFoundError:
        return None


def experiment_member(settings: AppSettings) -> Member:
    """The member side of an experiment's method, from the run config and the node config."""
    nc = settings.node_config
    exp = _with_overrides(_experiment(settings), nc.get("data-path"), nc.get("device"))
    method = _method(exp, settings)
    data, _, app = _build(exp, method)
    return Member(app, data.client)


#: The Flower ``ServerApp`` of an app folder written by :func:`write_flower_app`.
serverapp = flower_server_app(experiment_server_run)

#: The Flower ``ClientApp`` of an app folder written by :func:`write_flower_app`.
clientapp = flower_client_app(experiment_member)

#: The same with Flower's ``secaggplus_mod``: the client component of a method that asks for
#: secure aggregation (its members then answer ``train`` only inside SecAgg+).
clientapp_secure = flower_client_app(experiment_member, secure_aggregation=True)


class ExperimentMembers:
    """A picklable member factory for simulation: the experiment travels as TOML text."""

    def __init__(self, experiment: Any, target: str) -> None:
        self.experiment = tomli_w.dumps(experiment.to_toml_dict())
        self.target = target

    def __call__(self, settings: AppSettings) -> Member:
        config = {**settings.run_config, "experiment": self.experiment, "method": self.target}
        return experiment_member(AppSettings(config, settings.node_config, settings.run_id))


def experiment_member_factory(experiment: Any, target: str) -> ExperimentMembers:
    """Member factory for :func:`~consortium.runtime.flower.run_on_flower_simulation` that
    builds ``target``'s members (a method, or ``action:NAME``) of ``experiment`` in each
    simulation worker."""
    return ExperimentMembers(experiment, target)


def run_on_simulation(
    experiment: Any,
    target: str,
    workflow: Any,
    num_clients: int,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    description: str | None = None,
    backend_config: Mapping[str, Any] | None = None,
    data: Any = None,
) -> Any:
    """Run a workflow of an experiment on Flower's simulation engine (``execute``'s hook).

    A method runs as Flower runs simulations now: the experiment becomes a Flower app folder
    (:func:`write_flower_app`), submitted with ``flwr run`` to a SuperLink in simulation mode
    started for the run and stopped after it; the server side rebuilds the workflow from the
    experiment in Flower's simulation process and writes the run folder, which this function
    reads back. A post-hoc action's ``workflow`` holds what the action computed here, so it
    runs in this process on ``flwr.simulation.run_simulation`` (which Flower 1.41 marks
    deprecated; it is the only way to simulate a workflow object this process holds).

    Seed, ``min_replies`` and ``max_reply_mb`` come from the experiment; so do the Ray
    resources when its ``[federation]`` section has ``simulation_cpus``, ``cpus_per_client``
    or ``gpus_per_client`` (default: every core, one CPU per member at a time).
    ``data`` (the federated data the runner built) gives an in-process server the members'
    sizes; the ``flwr run`` server builds the data itself.
    """
    from consortium.runtime.flower.simulation import (
        run_on_flower_simulation,
        simulation_backend_config,
    )

    fed = experiment.federation
    if backend_config is None:
        backend_config = simulation_backend_config(
            fed.simulation_cpus, float(fed.cpus_per_client), float(fed.gpus_per_client)
        )
    if not target.startswith("action:"):
        return run_with_flwr(
            experiment, target, num_clients, run_dir=run_dir, resume=resume, backend=backend_config
        )
    return run_on_flower_simulation(
        workflow,
        experiment_member_factory(experiment, target),
        num_clients,
        seed=experiment.seed,
        min_replies=fed.min_replies,
        max_reply_bytes=fed.max_reply_bytes,
        run_dir=run_dir,
        resume=resume,
        progress=progress,
        description=description or target,
        backend_config=backend_config,
        secure_aggregation=secure_settings(experiment, target),
        data_sizes=None if data is None else member_sizes(data),
    )


#: The name the runner used before the application layer moved here.
run_method_on_flower_simulation = run_on_simulation


def run_with_flwr(
    experiment: Any,
    method: str,
    num_clients: int,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    backend: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Any:
    """Run ``method`` of ``experiment`` with ``flwr run`` on a simulation SuperLink of its own
    (``num_clients`` virtual SuperNodes; ``backend``: Flower's backend config); returns the
    :class:`~consortium.core.run.RunResult` read from the run folder it wrote."""
    from consortium.runtime.flower.loopback import LoopbackFederation

    with tempfile.TemporaryDirectory(prefix="consortium-flower-") as work:
        out = Path(run_dir if run_dir is not None else Path(work) / "run").absolute()
        app = Path(work) / "app"
        write_flower_app(experiment, app, method=method, run_dir=out, resume=resume)
        federation = LoopbackFederation(
            num_clients, Path(work) / "federation", simulation=True, backend=backend
        )
        with federation:
            run = federation.run(app, timeout=timeout)
        if (out / STOPPED).is_file():  # stopped cleanly (too few replies): one line, as in process
            summary = json.loads((out / STOPPED).read_text())
            raise RunStopped(str(summary.get("stop_reason", "the run stopped")), summary)
        if not run.ok:
            raise RuntimeError(
                f"the Flower simulation of {method!r} ended {run.status!r}:\n{run.log[-4000:]}"
            )
        return read_run_result(out)


def read_run_result(run_dir: Path) -> RunResult:
    """A finished run folder (summary, per-round lines, final model) as a ``RunResult``."""
    summary = json.loads((run_dir / SUMMARY).read_text())
    arrays = None
    if (run_dir / MODEL).exists():
        with np.load(run_dir / MODEL) as npz:
            arrays = {k: npz[k] for k in npz.files}
    rounds = read_jsonl(run_dir / METRICS)
    return RunResult(summary, rounds, arrays, float(summary.get("wall_time_s", 0.0)))


def app_name(experiment_name: str) -> str:
    """A Flower app name (letters, digits, hyphens; at most 32 characters)."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", experiment_name).strip("-")
    return ("consortium-" + name)[:32].rstrip("-")


def write_flower_app(
    experiment: Any,
    app_dir: str | Path,
    *,
    method: str | None = None,
    run_dir: str | Path | None = None,
    reply_timeout: float = 0.0,
    connect_timeout: float = 300.0,
    resume: bool = False,
    data_path: str | None = None,
    roster: str | Path | None = None,
) -> Path:
    """Write a Flower app folder that runs ``method`` of ``experiment`` with ``flwr run``.

    Parameters
    ----------
    experiment
        A validated :class:`~consortium.experiment.Experiment`.
    app_dir
        Folder to write (created; an existing ``pyproject.toml`` there is replaced).
    method
        One of the experiment's methods (default: the first).
    run_dir
        The server's run folder; relative paths are resolved on the SuperLink's machine from
        its working folder (default: ``OUTPUT_DIR/NAME/METHOD`` there).
    reply_timeout, connect_timeout, resume, data_path, roster
        Run config defaults (see the module docs); ``flwr run --run-config`` overrides them.

    Returns
    -------
    The path of the written ``pyproject.toml``.
    """
    method = method or experiment.methods[0]
    if method not in experiment.methods:
        raise ValueError(f"method {method!r} is not one of the experiment's {experiment.methods}")
    out = Path(app_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = "clientapp_secure" if secure_settings(experiment, method) else "clientapp"
    config: dict[str, Any] = {
        "method": method,
        "run-dir": "" if run_dir is None else str(run_dir),
        "data-path": data_path or "",
        "reply-timeout": float(reply_timeout),
        "connect-timeout": float(connect_timeout),
        "resume": bool(resume),
        "roster": "" if roster is None else str(roster),
    }
    project = {
        "project": {
            "name": app_name(experiment.name),
            "version": "1.0.0",
            "description": f"consortium experiment {experiment.name!r}, method {method!r}",
            "license": "Apache-2.0",
            # The nodes need consortium installed with its Flower extra; Flower does not
            # install it at run time when runtime dependency installation is off.
            "dependencies": ["consortium[flower]"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "consortium",
                    "components": {
                        "serverapp": f"{MODULE}:serverapp",
                        "clientapp": f"{MODULE}:{client}",
                    },
                    "config": config,
                }
            }
        },
    }
    text = tomli_w.dumps(project)
    experiment_toml = tomli_w.dumps(experiment.to_toml_dict())
    if "'''" in experiment_toml:  # not expressible as a literal string: escape it
        config["experiment"] = experiment_toml
        text = tomli_w.dumps(project)
    else:  # [tool.flwr.app.config] is the last table: keep the experiment readable
        text += f"experiment = '''\n{experiment_toml}'''\n"
    if tomllib.loads(text)["tool"]["flwr"]["app"]["config"]["experiment"] != experiment_toml:
        raise AssertionError("the experiment did not survive writing the app config")
    path = out / "pyproject.toml"
    path.write_text(
        "# Written by consortium: a Flower app that runs one experiment method.\n"
        "# Run it with `flwr run <this folder> <superlink connection> --stream`.\n" + text
    )
    return path
