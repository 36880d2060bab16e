"""One registry of every dataset an experiment can name.

Two kinds register here. A *pool* dataset has a loader that returns its splits (digits,
Fashion-MNIST, MNIST-5k); the ``[data]`` table's partition splits it among members. A *built*
dataset has a builder that makes the federated data itself (text and image domains, one task per
member); it may still use :func:`federate` for the split. Either may declare an options class
for the ``[data] options`` table, validated before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.config import ConfigError, Options, validate
from consortium.data.config import DataConfig
from consortium.plugins import Registry

Loader = Callable[[str | Path | None], Any]  # path -> DatasetSplits
Builder = Callable[[DataConfig, Any, int], Any]  # (data config, its options, seed) -> data

#: Modules that register the built-in datasets when imported.
BUILTIN_MODULES: tuple[str, ...] = (
    "consortium.data.sources",
    "consortium.data.text",
    "consortium.data.domains",
    "consortium.data.digit_domains",
    "consortium.data.multitask",
    "consortium.data.bridges",
)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset experiments can name (see the module docstring for the two kinds)."""

    name: str
    description: str
    load: Loader | None = None
    build: Builder | None = None
    options: type[Options] | None = None


def _key(name: str) -> str:
    return name.strip().replace("-", "_").lower()


_DATASETS: Registry[DatasetSpec] = Registry("dataset", BUILTIN_MODULES, key=_key)


def register_dataset(
    name: str,
    *,
    description: str = "",
    load: Loader | None = None,
    build: Builder | None = None,
    options: type[Options] | None = None,
    replace: bool = False,
) -> DatasetSpec:
    """Make a dataset available by name (``-`` and ``_`` are interchangeable).

    Give ``load(path) -> DatasetSplits`` for a pool dataset, or ``build(data_config, options,
    seed)`` for one that builds its federated data itself; ``options`` validates
    ``[data] options``. A name clash is an error unless ``replace`` says it is meant.
    """
    if (load is None) == (build is None):
        raise ValueError(f"dataset {name!r}: give exactly one of load= or build=")
    spec = DatasetSpec(_key(name), description, load, build, options)
    return _DATASETS.register(name, spec, replace=replace)


def register_loader(name: str, loader: Loader, *, replace: bool = False) -> DatasetSpec:
    """Shorthand for a pool dataset: ``register_dataset(name, load=loader)``."""
    return register_dataset(name, load=loader, replace=replace)


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset ``name``; unknown names are a one-line error listing the rest."""
    return _DATASETS.get(name)


def datasets() -> dict[str, DatasetSpec]:
    """Every registered dataset by name."""
    return _DATASETS.items()


def available_datasets() -> list[str]:
    """Registered dataset names, sorted (what an experiment's ``data.dataset`` accepts)."""
    return list(datasets())


def load_dataset(name: str, path: str | Path | None = None) -> Any:
    """The splits of a registered pool dataset (``path`` points its loader at a folder)."""
    spec = get_dataset(name)
    if spec.load is None:
        raise ConfigError(f"dataset {spec.name!r} builds federated data; it has no plain splits")
    return spec.load(path)


def dataset_options(cfg: DataConfig) -> Any:
    """``cfg.options`` validated by the dataset's options class (None when it takes none)."""
    spec = get_dataset(cfg.dataset)
    if spec.options is None:
        if cfg.options:
            raise ConfigError(f"data.options: dataset {spec.name!r} takes no options")
        return None
    return validate(spec.options, cfg.options, "data.options")


#: ``[data]`` fields handed to :func:`~consortium.data.federated.build_federated_data` as they are.
SPLIT_FIELDS = {
    "num_clients",
    "alpha",
    "beta",
    "k",
    "min_size",
    "client_test_fraction",
    "server_val_fraction",
    "test_fraction",
    "max_samples",
}


def federate(cfg: DataConfig, dataset: Any, seed: int, partitioner: Any = None) -> Any:
    """Split ``dataset`` (a registered name or loaded splits) as ``cfg`` says (or as
    ``partitioner`` says: see :func:`~consortium.data.federated.build_federated_data`)."""
    from consortium.data.federated import build_federated_data

    path = cfg.path if isinstance(dataset, str) else None
    split = cfg.model_dump(include=SPLIT_FIELDS)  # named alike in the table and the function
    return build_federated_data(
        dataset, scheme=cfg.partition, seed=seed, path=path, partitioner=partitioner, **split
    )


def build_data(cfg: DataConfig, seed: int = 0) -> Any:
    """The federated data ``cfg`` describes: the dataset's builder, else its partitioned pool."""
    spec = get_dataset(cfg.dataset)
    options = dataset_options(cfg)
    if spec.build is not None:
        return spec.build(cfg, options, seed)
    return federate(cfg, spec.name, seed)
