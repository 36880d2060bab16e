"""A consortium of hospitals, each holding only its own records: your own data and your own
torch model, as a plugin (see docs/bring-your-own.md).

Layout on disk (one CSV per site; the server may hold a test set of its own)::

    DATA/site-0/records.csv     f0, f1, ..., f7, label      (site 0's machine only)
    DATA/site-1/records.csv                                 (site 1's machine only)
    ...
    DATA/server/records.csv     the server's own test set   (the server's machine only)

In process (a trial with every folder on one machine) ``data.path`` is DATA; on a Flower
deployment each SuperNode's ``data-path`` is a folder holding just its own ``site-<id>/``,
and the server's ``data-path`` one holding just ``server/``. Nothing reads another site's
folder: :class:`~consortium.data.sites.SiteData` reads a site only when that member is asked
for, and a SuperNode only ever asks for its own.

Load it with ``plugins = ["hospitals"]`` in the experiment file (``hospitals.toml``), with
this folder on ``PYTHONPATH`` (or inside the Flower app folder).
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np
from pydantic import Field
from torch import nn

from consortium.config import Options
from consortium.data import DatasetNotFoundError, register_dataset
from consortium.data.sites import SiteData
from consortium.models import register_model

FILE = "records.csv"


# --- your own model -----------------------------------------------------------------------


class RiskNet(nn.Module):
    """A small network for tabular records: any torch module works the same way."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


# builder(input_shape, num_classes, **[model] options) -> nn.Module
register_model("risk_net", lambda shape, classes, **options: RiskNet(shape, classes, **options))


# --- your own data ------------------------------------------------------------------------


class HospitalOptions(Options):
    """The dataset's ``[data] options``: what every record looks like."""

    features: int = Field(8, ge=1, description="feature columns before the label")
    classes: int = Field(2, ge=2, description="number of outcome classes")


def read_records(folder: Path, features: int) -> tuple[np.ndarray, np.ndarray]:
    """One site's ``records.csv``: feature columns, then the label."""
    path = folder / FILE
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: not on this machine")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.shape[1] != features + 1:
        raise ValueError(f"{path}: {table.shape[1]} columns, expected {features} + label")
    return table[:, :features].astype(np.float32), table[:, features].astype(np.int64)


def build_hospitals(cfg, options: HospitalOptions, seed: int) -> SiteData:
    """The federated data: site ``cid`` is read from ``data.path/site-<cid>`` when (and only
    where) member ``cid`` is asked for; the server's test set from ``data.path/server``."""
    if cfg.path is None:
        raise DatasetNotFoundError("hospitals: set data.path to the folder of the site folders")
    root = Path(cfg.path)
    server = root / "server"
    return SiteData(
        "hospitals",
        cfg.num_clients,
        lambda cid: read_records(root / f"site-{cid}", options.features),
        input_shape=(options.features,),
        num_classes=options.classes,
        test=read_records(server, options.features) if (server / FILE).is_file() else None,
        client_test_fraction=cfg.client_test_fraction,
        seed=seed,
    )


register_dataset(
    "hospitals",
    build=build_hospitals,
    options=HospitalOptions,
    description="each site's records.csv in data.path/site-<id> (docs/bring-your-own.md)",
)


# --- example files to try it with ---------------------------------------------------------


def make_example_sites(root: str | Path, sites: int = 3, features: int = 8, seed: int = 0) -> Path:
    """Write synthetic records for ``sites`` hospitals and a server test set under ``root``
    (sites differ in size and in their patients' mix, as real ones do)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=features)
    root = Path(root)

    def write(folder: Path, n: int, shift: float) -> None:
        x = rng.normal(loc=shift, size=(n, features))
        y = (x @ weights + 0.5 * rng.normal(size=n) > shift * weights.sum()).astype(int)
        folder.mkdir(parents=True, exist_ok=True)
        header = ",".join([*(f"f{i}" for i in range(features)), "label"])
        np.savetxt(folder / FILE, np.column_stack([x, y]), delimiter=",", header=header,
                   comments="", fmt=["%.5f"] * features + ["%d"])  # fmt: skip

    for site in range(sites):
        write(root / f"site-{site}", 60 + 40 * site, shift=0.3 * site)
    write(root / "server", 200, shift=0.3)
    return root


if __name__ == "__main__":
    import sys

    print(make_example_sites(sys.argv[1] if len(sys.argv) > 1 else "hospital-data"))
