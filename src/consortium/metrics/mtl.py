"""Metrics of multi-task learning: per-task regression error, accuracy, task correlations.

Members evaluate their own task and must not send their test data, only a few sums. So the
metrics are built from *sufficient statistics* that a member computes locally and that add up
across members: :class:`RegressionStats` and :class:`ClassificationStats` are values (``a + b``)
from which per-task and pooled RMSE, explained variance, nMSE and accuracy follow exactly, as if
the server had seen the predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "ClassificationStats",
    "RegressionStats",
    "accuracy",
    "correlation_from_covariance",
    "explained_variance",
    "nmse",
    "rmse",
    "sign_agreement",
]


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Root mean squared error."""
    y, y_hat = np.asarray(y, np.float64), np.asarray(y_hat, np.float64)
    return float(np.sqrt(np.mean((y - y_hat) ** 2)))


def explained_variance(y: np.ndarray, y_hat: np.ndarray) -> float:
    """``1 - Var(y - ŷ) / Var(y)`` (scikit-learn's definition; 1 is perfect, 0 a constant)."""
    y, y_hat = np.asarray(y, np.float64), np.asarray(y_hat, np.float64)
    var = float(np.var(y))
    return 1.0 - float(np.var(y - y_hat)) / var if var > 0 else float("nan")


def nmse(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Normalised MSE, ``MSE / Var(y)``: the School benchmark's usual score (lower is better)."""
    y, y_hat = np.asarray(y, np.float64), np.asarray(y_hat, np.float64)
    var = float(np.var(y))
    return float(np.mean((y - y_hat) ** 2)) / var if var > 0 else float("nan")


def accuracy(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Share of labels predicted exactly (labels of any encoding, e.g. ±1)."""
    y, y_hat = np.asarray(y), np.asarray(y_hat)
    return float(np.mean(y == y_hat)) if y.size else float("nan")


@dataclass(frozen=True)
class RegressionStats:
    """Sums from which RMSE, explained variance and nMSE of a set of predictions follow.

    Attributes
    ----------
    n
        Number of samples.
    sum_y, sum_y2
        Sum of the targets and of their squares (for the target variance).
    sum_r, sum_r2
        Sum of the residuals ``y - ŷ`` and of their squares.
    """

    n: float = 0.0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_r: float = 0.0
    sum_r2: float = 0.0

    @classmethod
    def from_predictions(cls, y: np.ndarray, y_hat: np.ndarray) -> RegressionStats:
        y, y_hat = np.asarray(y, np.float64), np.asarray(y_hat, np.float64)
        r = y - y_hat
        return cls(float(y.size), float(y.sum()), float(y @ y), float(r.sum()), float(r @ r))

    def __add__(self, other: RegressionStats) -> RegressionStats:
        return RegressionStats(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    @property
    def mse(self) -> float:
        return self.sum_r2 / self.n if self.n else float("nan")

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self.mse))

    def _var(self, s: float, s2: float) -> float:
        return max(s2 / self.n - (s / self.n) ** 2, 0.0) if self.n else float("nan")

    @property
    def explained_variance(self) -> float:
        var_y = self._var(self.sum_y, self.sum_y2)
        return 1.0 - self._var(self.sum_r, self.sum_r2) / var_y if var_y > 0 else float("nan")

    @property
    def nmse(self) -> float:
        var_y = self._var(self.sum_y, self.sum_y2)
        return self.mse / var_y if var_y > 0 else float("nan")

    def as_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat form for a reply's metrics."""
        return {f"{prefix}{f.name}": float(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], prefix: str = "test_") -> RegressionStats:
        return cls(*(float(metrics[f"{prefix}{f.name}"]) for f in fields(cls)))


@dataclass(frozen=True)
class ClassificationStats:
    """Sums from which accuracy follows: samples and correct predictions."""

    n: float = 0.0
    correct: float = 0.0

    @classmethod
    def from_predictions(cls, y: np.ndarray, y_hat: np.ndarray) -> ClassificationStats:
        y, y_hat = np.asarray(y), np.asarray(y_hat)
        return cls(float(y.size), float(np.sum(y == y_hat)))

    def __add__(self, other: ClassificationStats) -> ClassificationStats:
        return ClassificationStats(self.n + other.n, self.correct + other.correct)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def as_metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {f"{prefix}n": self.n, f"{prefix}correct": self.correct}

    @classmethod
    def from_metrics(
        cls, metrics: Mapping[str, float], prefix: str = "test_"
    ) -> ClassificationStats:
        return cls(float(metrics[f"{prefix}n"]), float(metrics[f"{prefix}correct"]))


def correlation_from_covariance(cov: np.ndarray) -> np.ndarray:
    """Correlation matrix of a covariance matrix (e.g. the learned task covariance Ω).

    A zero variance gives zero correlations in its row and column (and 1 on the diagonal).
    """
    cov = np.asarray(cov, np.float64)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    scale = np.outer(sd, sd)
    corr = np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 0)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def sign_agreement(learned: np.ndarray, true: np.ndarray, threshold: float = 0.3) -> float:
    """Share of task pairs with ``|true| >= threshold`` whose learned correlation has its sign.

    Pairs the truth calls unrelated (small ``|true|``) have no sign to recover and are left out.
    """
    learned, true = np.asarray(learned), np.asarray(true)
    if learned.shape != true.shape:
        raise ValueError(f"correlation shapes differ: {learned.shape} vs {true.shape}")
    off = ~np.eye(true.shape[0], dtype=bool) & (np.abs(true) >= threshold)
    if not off.any():
        return float("nan")
    return float(np.mean(np.sign(learned[off]) == np.sign(true[off])))
