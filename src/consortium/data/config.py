"""The ``[data]`` table: which data, and how it is split among members."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from consortium.config import Options

Scheme = Literal["iid", "homogeneous", "dirichlet", "quantity", "label_k", "groups"]


class DataConfig(Options):
    """Which dataset, how it is split among members, what the server keeps.

    ``options`` holds a dataset's own settings; each dataset validates them with its own
    options class (``consortium datasets NAME`` lists them).
    """

    dataset: str = Field("digits", description="a registered dataset (consortium datasets)")
    path: str | None = Field(None, description="folder or file holding the data, if not standard")
    num_clients: int = Field(10, ge=1, le=1_000_000, description="number of members")
    partition: Scheme = Field(
        "iid", description="iid | homogeneous | dirichlet | quantity | label_k | groups"
    )
    alpha: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration (label skew)")
    beta: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration (quantity skew)")
    k: int = Field(2, ge=1, description="classes per member for label_k")
    min_size: int = Field(10, ge=0, description="minimum samples per member")
    client_test_fraction: float = Field(
        0.2, ge=0, lt=1, description="share of a member's data held out for its test view"
    )
    server_val_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the pool held by the server for validation"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="global test share when the data has no official test split"
    )
    max_samples: int | None = Field(
        None, ge=1, description="subsample the training pool (quick runs)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the dataset's own options (consortium datasets NAME)"
    )
