"""FedRA: federated LoRA tuning by members that hold only some transformer blocks, with the
depth-heterogeneous baselines ALL-large, ALL-small, InclusiveFL (optionally with its momentum
distillation) and DepthFL."""

from consortium.algorithms.fedra.allocation import allocate
from consortium.algorithms.fedra.client import LogitsOnly, fedra_client_app
from consortium.algorithms.fedra.config import DepthFLConfig, FedRAConfig
from consortium.algorithms.fedra.depthfl import DepthFL
from consortium.algorithms.fedra.workflow import FedRA, seeded_lora_model_fn

__all__ = [
    "DepthFL",
    "DepthFLConfig",
    "FedRA",
    "FedRAConfig",
    "LogitsOnly",
    "allocate",
    "fedra_client_app",
    "seeded_lora_model_fn",
]
