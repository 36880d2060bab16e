"""Data: loaders that never download, partitions as disjoint index sets, per-member views.

Every dataset an experiment can name is in one registry (:mod:`consortium.data.registry`).
"""

from consortium.data.config import DataConfig
from consortium.data.federated import ClientData, FederatedData, build_federated_data
from consortium.data.partition import SCHEMES, Partition, partition
from consortium.data.registry import (
    DatasetSpec,
    available_datasets,
    build_data,
    datasets,
    federate,
    get_dataset,
    load_dataset,
    register_dataset,
    register_loader,
)
from consortium.data.sources import Dataset, DatasetNotFoundError, DatasetSplits, read_idx

__all__ = [
    "SCHEMES",
    "ClientData",
    "DataConfig",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DatasetSplits",
    "FederatedData",
    "Partition",
    "available_datasets",
    "build_data",
    "build_federated_data",
    "datasets",
    "federate",
    "get_dataset",
    "load_dataset",
    "partition",
    "read_idx",
    "register_dataset",
    "register_loader",
]
