"""Bridges to the data tools FL researchers already use: Hugging Face ``datasets`` on disk, and
``flwr-datasets`` partitioners.

* :func:`hf_splits` turns Hugging Face datasets (already in memory or saved with
  ``save_to_disk``) into consortium's :class:`~consortium.data.DatasetSplits`: image columns
  become float arrays ``(n, C, H, W)`` in [0, 1], feature columns a float matrix, the label
  column class ids.
* :class:`FlwrPartitioner` lets a ``flwr-datasets`` partitioner (``DirichletPartitioner``,
  ``IidPartitioner``, ``PathologicalPartitioner``, ``NaturalIdPartitioner``, ...) make the
  members' split instead of ``[data] partition``; the result is checked to be disjoint and
  complete like every partition.
* The dataset ``hf_disk`` does both from an experiment file::

      [data]
      dataset = "hf_disk"
      path = "my-data"            # a folder written by DatasetDict.save_to_disk
      num_clients = 10
      options = { x = "image", y = "label", partitioner = "DirichletPartitioner",
                  partitioner_options = { partition_by = "label", alpha = 0.3 } }

Nothing is downloaded: ``hf_disk`` reads only the folder ``data.path`` names (``pip install
"consortium[hf]"`` brings ``datasets`` and ``flwr-datasets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from consortium.config import ConfigError, Options
from consortium.data.config import DataConfig
from consortium.data.partition import Partition
from consortium.data.registry import federate, register_dataset
from consortium.data.sources import Dataset, DatasetNotFoundError, DatasetSplits

EXTRA_HINT = 'pip install "consortium[hf]"'
INDEX = "__consortium_index__"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module.split('.')[0]} is needed here: {EXTRA_HINT}") from None


def _features(table: Any, x: str | Sequence[str]) -> np.ndarray:
    """The input array of a Hugging Face dataset: one image/array column, or feature columns."""
    columns = [x] if isinstance(x, str) else list(x)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(f"data.options.x: no column {missing[0]!r} (has {table.column_names})")
    numeric = table.with_format("numpy")
    if len(columns) > 1:  # tabular: one number per column and sample
        return np.column_stack([np.asarray(numeric[c], np.float32) for c in columns])
    values = numeric[columns[0]]
    arr = np.stack([np.asarray(v) for v in values]) if isinstance(values, list) else values
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:  # images: (n, H, W) or (n, H, W, C) bytes -> (n, C, H, W) in [0, 1]
        arr = arr.astype(np.float32) / 255.0
        arr = arr[:, None] if arr.ndim == 3 else np.moveaxis(arr, -1, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _labels(table: Any, y: str) -> tuple[np.ndarray, int | None]:
    if y not in table.column_names:
        raise ConfigError(f"data.options.y: no column {y!r} (has {table.column_names})")
    labels = np.asarray(table.with_format("numpy")[y])
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ConfigError(f"data.options.y: column {y!r} does not hold class ids 0, 1, ...")
    feature = table.features.get(y)
    return labels.astype(np.int64), getattr(feature, "num_classes", None)


def hf_splits(
    train: Any,
    test: Any = None,
    *,
    x: str | Sequence[str] = "image",
    y: str = "label",
    name: str = "hf",
) -> DatasetSplits:
    """Hugging Face datasets (``datasets.Dataset``) as consortium's splits.

    ``x`` names the input column (images, or arrays) or a list of numeric feature columns;
    ``y`` the label column (a ``ClassLabel`` gives the number of classes, else the largest
    label + 1 over both splits).
    """
    train_y, classes = _labels(train, y)
    test_y = None if test is None else _labels(test, y)[0]
    if classes is None:
        classes = int(max(train_y.max(initial=0), -1 if test_y is None else test_y.max(initial=0)))
        classes += 1
    train_set = Dataset(name, _features(train, x), train_y, classes)
    test_set = None if test is None else Dataset(name, _features(test, x), test_y, classes)
    return DatasetSplits(train_set, test_set)


class FlwrPartitioner:
    """A ``flwr-datasets`` partitioner making the members' split of a consortium pool.

    Called by :func:`~consortium.data.federated.build_federated_data` with the pool's
    positions in the training split: the partitioner sees those rows of ``table`` (the
    training split as a Hugging Face dataset, so it may partition by any column: a label, a
    writer or site id) and each of its partitions becomes a member.

    Parameters
    ----------
    partitioner
        A partitioner instance, or the name of a class in ``flwr_datasets.partitioner``.
    table
        The training split as a ``datasets.Dataset`` (its rows in the order of the splits).
    options
        Keyword arguments of the class when ``partitioner`` is a name (``num_partitions`` is
        the experiment's ``data.num_clients``; ``seed`` defaults to the run seed when the
        class takes one).
    """

    def __init__(
        self,
        partitioner: Any,
        table: Any,
        num_clients: int,
        options: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(partitioner, str):
            module = _require("flwr_datasets.partitioner")
            cls = getattr(module, partitioner, None)
            if not isinstance(cls, type) or not partitioner.endswith("Partitioner"):
                raise ConfigError(
                    f"data.options.partitioner: {partitioner!r} is not a partitioner of "
                    "flwr_datasets.partitioner (e.g. DirichletPartitioner, IidPartitioner)"
                )
            kwargs = dict(options or {})
            import inspect

            params = inspect.signature(cls).parameters
            if "num_partitions" in params:
                kwargs["num_partitions"] = num_clients
            if "seed" in params:
                kwargs.setdefault("seed", seed)
            try:
                partitioner = cls(**kwargs)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"data.options.partitioner_options: {err}") from None
        self.partitioner = partitioner
        self.table = table
        self.num_clients = num_clients
        self.name = f"flwr:{type(partitioner).__name__}"

    def __call__(self, positions: np.ndarray, labels: np.ndarray) -> Partition:
        rows = self.table.select(np.asarray(positions).tolist())
        rows = rows.add_column(INDEX, list(range(len(rows))))
        self.partitioner.dataset = rows
        parts = self.partitioner.num_partitions
        if parts != self.num_clients:
            raise ConfigError(
                f"the partitioner has {parts} partitions, data.num_clients is {self.num_clients}"
            )
        indices = []
        for i in range(parts):
            got = np.asarray(self.partitioner.load_partition(i)[INDEX], np.int64)
            indices.append(np.sort(got))
        part = Partition(tuple(indices))
        try:
            part.validate(len(rows))
        except ValueError as err:
            raise ConfigError(
                f"{self.name}: every sample must go to exactly one member ({err})"
            ) from None
        return part


class HFDiskOptions(Options):
    """``[data] options`` of ``hf_disk``: which columns and splits, and the partitioner."""

    x: str | list[str] = Field("image", description="input column, or numeric feature columns")
    y: str = Field("label", description="label column (class ids)")
    train_split: str = Field("train", description="split the members share")
    test_split: str | None = Field(
        "test", description="the server's test split (missing: held out from train)"
    )
    partitioner: str | None = Field(
        None, description="a flwr_datasets.partitioner class (default: [data] partition)"
    )
    partitioner_options: dict[str, Any] = Field(
        default_factory=dict, description="its keyword arguments (num_partitions is set)"
    )


def _load_from_disk(path: str | Path | None) -> Any:
    if path is None:
        raise DatasetNotFoundError(
            "hf_disk: set data.path to a folder written by datasets' save_to_disk"
        )
    datasets = _require("datasets")
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: no such folder (save a dataset with save_to_disk)")
    try:
        return datasets.load_from_disk(str(folder))
    except FileNotFoundError as err:
        raise DatasetNotFoundError(f"{folder}: not a saved Hugging Face dataset ({err})") from None


def build_hf_disk(cfg: DataConfig, options: HFDiskOptions, seed: int) -> Any:
    """The federated data of a Hugging Face dataset saved on disk (see the module docs)."""
    saved = _load_from_disk(cfg.path)
    if hasattr(saved, "keys"):  # a DatasetDict
        if options.train_split not in saved:
            raise ConfigError(
                f"data.options.train_split: no split {options.train_split!r} "
                f"(has {list(saved.keys())})"
            )
        train = saved[options.train_split]
        test = saved.get(options.test_split) if options.test_split else None
    else:
        train, test = saved, None
    name = Path(str(cfg.path)).name
    splits = hf_splits(train, test, x=options.x, y=options.y, name=name)
    partitioner = None
    if options.partitioner is not None:
        partitioner = FlwrPartitioner(
            options.partitioner, train, cfg.num_clients, options.partitioner_options, seed
        )
    return federate(cfg, splits, seed, partitioner)


register_dataset(
    "hf_disk",
    build=build_hf_disk,
    options=HFDiskOptions,
    description="a Hugging Face dataset saved on disk (data.path); flwr-datasets partitioners",
)
