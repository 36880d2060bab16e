"""A consortium workflow on Flower's Ray-backed simulation engine, for large member counts.

Every member is a virtual SuperNode (``partition-id`` = member id) served by a pool of Ray
worker processes; the workflow itself runs in this process, so the returned
:class:`~consortium.core.run.RunResult` (and the run folder) are those of the in-process
runtime. With the same seed, data and workflow the final model equals the in-process run's.

Flower pickles the client app into a worker for every message: give a ``member_factory``
that pickles small (a module-level function, or a ``functools.partial`` of one over the
experiment) and builds the members' data on the worker, once per worker process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from consortium.core.run import RunResult, RunStopped
from consortium.core.workflow import Workflow
from consortium.runtime.flower.apps import (
    AppSettings,
    MemberFactory,
    ServerRun,
    flower_client_app,
    flower_server_app,
)

log = logging.getLogger("consortium.runtime.flower")


def simulation_backend_config(
    num_cpus: int | None = None, cpus_per_client: float = 1.0, gpus_per_client: float = 0.0
) -> dict[str, Any]:
    """Flower's ``backend_config`` for the Ray engine.

    ``num_cpus`` bounds what Ray may use in total (default: every core); with
    ``cpus_per_client`` CPUs each, ``num_cpus / cpus_per_client`` members train at a time.
    """
    init_args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if num_cpus is not None:
        init_args["num_cpus"] = num_cpus
    return {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
        "init_args": init_args,
    }


def run_on_flower_simulation(
    workflow: Workflow,
    member_factory: MemberFactory,
    num_clients: int,
    *,
    progress: bool = True,
    backend_config: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
    **server: Any,
) -> RunResult:
    """Run ``workflow`` with ``num_clients`` virtual members on Flower's simulation engine.

    Parameters
    ----------
    workflow
        Any consortium workflow; it runs unchanged, in this process.
    member_factory
        ``member_factory(settings) -> Member``: the member handlers and ``data(cid)``, built
        in each simulation worker (``settings.node_config`` holds ``partition-id`` and
        ``num-partitions``; ``settings.run_config`` is ``run_config``).
    num_clients
        Members, i.e. virtual SuperNodes.
    progress
        As for :func:`~consortium.core.run.run_workflow` (default: a progress bar).
    backend_config
        Flower's Ray ``backend_config`` (see :func:`simulation_backend_config`; default:
        one CPU per member, all cores).
    run_config
        Handed to ``member_factory`` as ``settings.run_config``.
    server
        The other fields of :class:`~consortium.runtime.flower.apps.ServerRun`, as in a
        deployment: ``seed``, ``min_replies``, ``max_reply_bytes`` (as for every grid; the
        same seed gives the same sampling and member randomness as the in-process runtime),
        ``reply_timeout`` (seconds to wait for one exchange's replies; ``None``: until all
        arrived), ``run_dir``, ``resume``, ``description`` (as for ``run_workflow``; member
        state lives in Flower's per-run node contexts, so a resumed run starts its members
        with empty state), ``secure_aggregation`` (SecAgg+ for the workflow's ``send_mean``;
        members get Flower's ``secaggplus_mod``), ``data_sizes`` (member id -> samples it
        holds: the cap of reported sample counts and SecAgg+'s ``max_weight``).
    """
    results: list[RunResult] = []
    config = dict(run_config or {})
    server.setdefault("connect_timeout", max(300.0, 0.1 * num_clients))
    run = ServerRun(workflow=workflow, num_clients=num_clients, progress=progress, **server)

    def build(_: AppSettings) -> ServerRun:
        return run

    # Imported here: Flower's simulation engine (Ray) costs a second to import, and every
    # deployed member process imports this package.
    from flwr.simulation import run_simulation

    stops: list[RunStopped] = []
    server_app = flower_server_app(build, on_result=results.append, on_stop=stops.append)
    client = flower_client_app(
        _WithRunConfig(member_factory, config) if config else member_factory,
        secure_aggregation=run.secure_aggregation is not None,
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    run_simulation(
        server_app=server_app,
        client_app=client,
        num_supernodes=num_clients,
        backend_config=dict(backend_config or simulation_backend_config()),
    )
    if stops:  # the workflow stopped cleanly (too few replies): say so, as in process
        raise stops[0]
    if not results:
        raise RuntimeError("the Flower simulation ended without a result (see its log above)")
    return results[0]


class _WithRunConfig:
    """A member factory that sees ``run_config`` (simulation apps get an empty one)."""

    def __init__(self, factory: MemberFactory, run_config: dict[str, Any]) -> None:
        self.factory = factory
        self.run_config = run_config

    def __call__(self, settings: AppSettings) -> Any:
        merged = AppSettings(
            {**self.run_config, **settings.run_config}, settings.node_config, settings.run_id
        )
        return self.factory(merged)
