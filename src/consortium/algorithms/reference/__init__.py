"""Reference trainers every method is compared with: standalone and centralised."""

from consortium.algorithms.reference.centralised import Centralised, CentralisedConfig
from consortium.algorithms.reference.standalone import (
    Standalone,
    StandaloneConfig,
    add_standalone_handler,
    standalone_client_app,
)

__all__ = [
    "Centralised",
    "CentralisedConfig",
    "Standalone",
    "StandaloneConfig",
    "add_standalone_handler",
    "standalone_client_app",
]
