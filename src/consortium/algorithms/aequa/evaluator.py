"""Scores a slimmable model's arrays at any width on a server-held split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from consortium.algorithms.aequa.client import WidthModels
from consortium.algorithms.base.supervised import ModelFn
from consortium.core.message import Arrays
from consortium.models.slimmable import submodel_arrays
from consortium.models.weights import set_arrays
from consortium.training import evaluate


class WidthEvaluator:
    """Scores a slimmable model's arrays at any width on a server-held split.

    A width-``p`` pass of the full model computes exactly what the extracted width-``p``
    sub-model computes (tested), so the server never builds the sub-models to score them.
    """

    def __init__(
        self, model_fn: ModelFn, x: np.ndarray, y: np.ndarray, device: str = "auto"
    ) -> None:
        self.models = WidthModels(model_fn, device)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __call__(self, arrays: Mapping[str, np.ndarray], width: float = 1.0) -> float:
        if len(self.y) == 0:
            return float("nan")
        model = self.models.full()
        set_arrays(model, arrays)
        model.set_width(width)
        try:
            return evaluate(model, self.x, self.y, device=self.models.device)["accuracy"]
        finally:
            model.set_width(1.0)

    def sub_arrays(self, arrays: Mapping[str, np.ndarray], width: float) -> Arrays:
        """The width-``width`` sub-model's arrays (smaller tensors) cut from the full arrays."""
        if width >= 1.0:
            return dict(arrays)
        return submodel_arrays(self.models.full(), arrays, width)
