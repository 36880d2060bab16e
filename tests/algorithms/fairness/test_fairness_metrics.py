import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from consortium.metrics.fairness import aligned, fairness_summary, ipr, member_table, pearson


def test_pearson_matches_scipy_and_aligns_members_by_id():
    rng = np.random.default_rng(0)
    c, a = rng.normal(size=7), rng.normal(size=7)
    expected = pearsonr(c, a).statistic
    assert pearson(dict(enumerate(c)), dict(enumerate(a))) == pytest.approx(expected)
    # String keys (as read back from JSON) and a different order are the same members.
    shuffled = {str(i): a[i] for i in reversed(range(7))}
    assert pearson(dict(enumerate(c)), shuffled) == pytest.approx(expected)
    # A member missing on one side (or with a NaN) is left out of both.
    partial = {i: a[i] for i in range(6)} | {6: float("nan")}
    assert pearson(dict(enumerate(c)), partial) == pytest.approx(pearsonr(c[:6], a[:6]).statistic)


def test_pearson_of_perfectly_commensurate_rewards_is_one():
    c = {0: 10, 1: 20, 2: 40}
    assert pearson(c, {0: 0.5, 1: 0.6, 2: 0.8}) == pytest.approx(1.0)
    assert pearson(c, {0: 0.8, 1: 0.6, 2: 0.2}) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "contributions,rewards",
    [
        ({0: 5.0, 1: 5.0, 2: 5.0}, {0: 0.1, 1: 0.5, 2: 0.9}),  # equal contributions
        ({0: 0.9, 1: 0.9 + 1e-17, 2: 0.9}, {0: 0.1, 1: 0.5, 2: 0.9}),  # equal up to rounding
        ({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.7, 1: 0.7, 2: 0.7}),  # one model for all (FedAvg)
        ({0: 1.0}, {0: 0.7}),  # one member
        ({}, {}),
    ],
)
def test_pearson_is_nan_where_undefined(contributions, rewards):
    assert math.isnan(pearson(contributions, rewards))


def test_ipr_counts_members_at_least_as_good_as_alone():
    rewards = {0: 0.9, 1: 0.5, 2: 0.7, 3: 0.6}
    alone = {0: 0.8, 1: 0.6, 2: 0.7, 3: 0.2}
    assert ipr(rewards, alone) == pytest.approx(3 / 4)  # a tie counts as incentivised
    assert ipr(rewards, alone, tolerance=0.1) == pytest.approx(1.0)
    assert ipr(rewards, {"1": 0.6}) == 0.0  # only common members count
    assert math.isnan(ipr(rewards, {}))
    with pytest.raises(ValueError):
        ipr(rewards, alone, tolerance=-1)


def test_member_table_and_summary():
    rows = member_table({0: 1.0, 1: 2.0}, {0: 0.5, 1: 0.7}, {0: 0.6}, width={"0": 0.25, "1": 1})
    assert rows[0] == {
        "member": 0,
        "contribution": 1.0,
        "reward_accuracy": 0.5,
        "standalone_accuracy": 0.6,
        "width": 0.25,
        "gain": pytest.approx(-0.1),
    }
    assert rows[1]["gain"] is None and rows[1]["width"] == 1.0
    out = fairness_summary({0: 1.0, 1: 2.0}, {0: 0.5, 1: 0.7}, {0: 0.6, 1: 0.6}, prefix="x_")
    assert out == {"x_pearson": pytest.approx(1.0), "x_ipr": 0.5}
    ids, c, a = aligned({"2": 1, 1: 2}, {1: 3, 2: 4, 5: 6})
    assert ids == [1, 2] and list(c) == [2, 1] and list(a) == [3, 4]
