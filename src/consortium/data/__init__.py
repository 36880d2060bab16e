"""Data: loaders that never download, partitions as disjoint index sets, per-member views."""

from consortium.data.federated import ClientData, FederatedData, build_federated_data
from consortium.data.partition import SCHEMES, Partition, partition
from consortium.data.sources import (
    Dataset,
    DatasetNotFoundError,
    DatasetSplits,
    available_datasets,
    load_dataset,
    read_idx,
    register_loader,
)

__all__ = [
    "SCHEMES",
    "ClientData",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSplits",
    "FederatedData",
    "Partition",
    "available_datasets",
    "build_federated_data",
    "load_dataset",
    "partition",
    "read_idx",
    "register_loader",
]
