"""The Flower runtime: any consortium workflow on a real federation or in Flower's simulation.

Needs the optional extra (``pip install "consortium[flower]"``); nothing outside this package
and the application layer's ``consortium.experiment.flower`` imports Flower. This package knows
only the core: experiment files become Flower apps in ``consortium.experiment.flower``. The
same workflow object runs in-process or here, unchanged:

* :class:`FlowerGrid` — a consortium grid that moves messages over a Flower ``Grid``;
* :func:`flower_server_app` / :func:`flower_client_app` — a workflow as a Flower
  ``ServerApp``, member handlers as a Flower ``ClientApp`` (Message API: ``train``,
  ``evaluate``, ``query.<kind>``; member state in the node's ``Context.state``);
* :func:`run_on_flower_simulation` — the same on Flower's Ray simulation engine;
* :class:`LoopbackFederation` — a whole federation as local processes on 127.0.0.1, with
  TLS and SuperNode authentication (:func:`write_tls_certificates`, :func:`write_node_key`);
* :class:`SecureAggregation` — SecAgg+ for a workflow's ``send_mean`` (Flower's
  ``secaggplus_mod`` on the members, its ``SecAggPlusWorkflow`` on the server).
"""

from consortium.runtime.flower.apps import (
    AppSettings,
    ConsortiumClientApp,
    Member,
    MemberFactory,
    ServerRun,
    flower_client_app,
    flower_server_app,
)
from consortium.runtime.flower.grid import FederationError, FlowerGrid
from consortium.runtime.flower.loopback import FlowerRun, LoopbackFederation
from consortium.runtime.flower.records import from_recorddict, message_type, to_recorddict
from consortium.runtime.flower.secagg import SecureAggregation
from consortium.runtime.flower.security import (
    NodeKey,
    TlsFiles,
    write_node_key,
    write_tls_certificates,
)
from consortium.runtime.flower.simulation import (
    run_on_flower_simulation,
    simulation_backend_config,
)

__all__ = [
    "AppSettings",
    "ConsortiumClientApp",
    "FederationError",
    "FlowerGrid",
    "FlowerRun",
    "LoopbackFederation",
    "Member",
    "MemberFactory",
    "NodeKey",
    "SecureAggregation",
    "ServerRun",
    "TlsFiles",
    "flower_client_app",
    "flower_server_app",
    "from_recorddict",
    "message_type",
    "run_on_flower_simulation",
    "simulation_backend_config",
    "to_recorddict",
    "write_node_key",
    "write_tls_certificates",
]
