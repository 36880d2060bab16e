"""The target benchmarks/unlearning.py checks: each criterion of issue #13 names its own miss."""

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "unlearning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_unlearning", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def class_row(**changes):
    row = {
        "kind": "class",
        "forget_accuracy": 0.0,
        "retain_test_accuracy": 0.92,
        "original_retain_test_accuracy": 0.93,
        "retrain_retain_test_accuracy": 0.925,
        "cpu_vs_retrain": 0.04,
    }
    return {**row, **changes}


def test_a_row_that_meets_the_target_has_no_miss(bench):
    assert bench.misses(class_row()) == []


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(forget_accuracy=0.03), "forget acc 0.030"),
        (dict(retain_test_accuracy=0.908), "under the original"),
        (dict(retrain_retain_test_accuracy=0.95), "under the retrain"),
        (dict(cpu_vs_retrain=0.051), "CPU / retrain 0.051"),
        (dict(cpu_vs_retrain=None), "CPU / retrain None"),
    ],
)
def test_each_criterion_names_its_miss(bench, changes, words):
    found = bench.misses(class_row(**changes))
    assert len(found) == 1 and words in found[0], found


def test_member_requests_are_judged_by_membership_and_the_member_s_other_data(bench):
    row = {
        "kind": "samples",
        "forget_accuracy": 1.0,  # not a miss: retraining still knows most of them too
        "mia_auc": 0.45,
        "mia_auc_gap": 0.02,
        "member_retain_accuracy": 0.97,
        "original_member_retain_accuracy": 0.975,
        "retrain_member_retain_accuracy": 0.97,
        "cpu_vs_retrain": 0.01,
    }
    assert bench.misses(row) == []
    assert "MIA AUC" in bench.misses({**row, "mia_auc_gap": 0.06})[0]
    assert "member retain accuracy" in bench.misses({**row, "member_retain_accuracy": 0.9})[0]
