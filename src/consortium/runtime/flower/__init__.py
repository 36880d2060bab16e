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

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consortium.core.lazy import lazy_exports

# Flower prints its log lines through a handler of its own *and* passes them on to the root
# logger, so once an application (the ``consortium`` command with -v, a notebook) configures
# logging every Flower line appears twice. Flower's own handler prints them once.
logging.getLogger("flwr").propagate = False

#: The modules of this package and the public names each defines. Imported on first use: a
#: member process loads one app module per message and pays only for the modules it touches.
_MODULES = {
    "apps": (
        "AppSettings",
        "ConsortiumClientApp",
        "Member",
        "MemberFactory",
        "ServerRun",
        "flower_client_app",
        "flower_server_app",
    ),
    "grid": ("FederationError", "FlowerGrid"),
    "loopback": ("FlowerRun", "LoopbackFederation"),
    "records": ("from_recorddict", "message_type", "to_recorddict"),
    "secagg": ("SecureAggregation",),
    "security": ("NodeKey", "TlsFiles", "write_node_key", "write_tls_certificates"),
    "simulation": ("run_on_flower_simulation", "simulation_backend_config"),
}
_EXPORTS = {name: f".{module}" for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
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


__getattr__ = lazy_exports(__name__, _EXPORTS)


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
