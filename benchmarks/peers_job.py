"""The model and the samples every rival job of ``benchmarks/peers.py`` trains on.

Plain PyTorch and numpy, no consortium code: the stock Flower job (``peers_flower.py``) and the
pfl-research job (``peers_pfl.py``) import this file, so both train the very same network on
the very same members that consortium's CNN and data pool hold (``peers.py`` wrote the members'
sample ids and the initial weights).
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
from torch import nn


class Net(nn.Module):
    """Two conv blocks and two linear layers (the model every job of the benchmark trains)."""

    def __init__(self, channels: int, size: int, classes: int, width=(32, 64), hidden=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width[0], width[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width[1] * (size // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST family's format), gzipped."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def load_samples(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every training sample (``x``, ``y``), the test set and the members' sample ids
    (member ``i`` holds ``ids[cut[i]:cut[i + 1]]``)."""
    split = np.load(spec["members"])
    if spec["dataset"] == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]
        y = d.target.astype(np.int64)
        test_x, test_y = x[split["test"]], y[split["test"]]
    else:
        root = spec["data_dir"]
        x = (read_idx(f"{root}/train-images-idx3-ubyte.gz") / 255.0).astype(np.float32)[:, None]
        y = read_idx(f"{root}/train-labels-idx1-ubyte.gz").astype(np.int64)
        test_x = (read_idx(f"{root}/t10k-images-idx3-ubyte.gz") / 255.0).astype(np.float32)
        test_x = test_x[:, None]
        test_y = read_idx(f"{root}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return {
        "x": x, "y": y, "test_x": test_x, "test_y": test_y,
        "ids": split["ids"], "cut": split["cut"],
    }  # fmt: skip
