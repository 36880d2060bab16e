"""FedAvg and FedProx."""

from consortium.algorithms.fedavg.config import FedAvgConfig
from consortium.algorithms.fedavg.workflow import FedAvg

__all__ = ["FedAvg", "FedAvgConfig"]
