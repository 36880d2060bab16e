"""Multi-task metrics from sufficient statistics equal the direct formulas."""

from __future__ import annotations

import numpy as np
import pytest

from consortium.metrics.mtl import (
    ClassificationStats,
    RegressionStats,
    correlation_from_covariance,
    explained_variance,
    nmse,
    rmse,
    sign_agreement,
)


def test_regression_stats_add_up_to_the_pooled_scores():
    rng = np.random.default_rng(0)
    y1, y2 = rng.standard_normal(30), rng.standard_normal(50) + 2
    p1, p2 = y1 + 0.3 * rng.standard_normal(30), y2 + 0.1
    s1 = RegressionStats.from_predictions(y1, p1)
    s2 = RegressionStats.from_predictions(y2, p2)
    assert s1.rmse == pytest.approx(rmse(y1, p1))
    assert s1.explained_variance == pytest.approx(explained_variance(y1, p1))
    assert s1.nmse == pytest.approx(nmse(y1, p1))
    pooled = s1 + s2
    y, p = np.concatenate([y1, y2]), np.concatenate([p1, p2])
    assert pooled.rmse == pytest.approx(rmse(y, p))
    assert pooled.explained_variance == pytest.approx(explained_variance(y, p))
    assert RegressionStats.from_metrics(s1.as_metrics()) == s1


def test_classification_stats_and_correlations():
    s = ClassificationStats.from_predictions(np.array([1, -1, 1, 1]), np.array([1, 1, 1, -1]))
    assert (s + s).accuracy == 0.5
    cov = np.array([[4.0, -2.0, 0.0], [-2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    corr = correlation_from_covariance(cov)
    assert corr[0, 1] == pytest.approx(-1.0) and corr[2, 2] == 1.0 and corr[0, 2] == 0.0
    true = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, -0.9], [-0.9, -0.9, 1.0]])
    assert sign_agreement(true * 0.2, true) == 1.0
    assert sign_agreement(-true, true) == 0.0
