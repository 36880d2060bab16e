"""Robust rules and DP-FedAvg's noisy mean: each checked by hand, by brute force over random
partial coverage, and against the attack it is meant to stop."""

import itertools

import numpy as np
import pytest
from hypothesis import given

from consortium.core import Update, partial_mean
from consortium.core.aggregation import (
    RULES,
    clip_updates,
    coordinate_median,
    krum_select,
    noisy_clipped_mean,
    robust_mean,
    trimmed_mean,
    update_norms,
)

from .test_properties import FAST, federations


def covering_values(reference, updates, name, idx):
    """The values of entry ``idx`` of ``name`` over the updates that cover it."""
    out = []
    for u in updates:
        arr = u.arrays.get(name)
        if arr is None or u.weight <= 0:
            continue
        if any(i >= d for i, d in zip(idx, arr.shape, strict=True)):
            continue
        if u.masks is not None and name in u.masks and not u.masks[name][idx]:
            continue
        out.append(float(arr[idx]))
    return out


def by_hand(reference, updates, reduce):
    out = {}
    for name, ref in reference.items():
        res = ref.astype(np.float64).copy()
        for idx in itertools.product(*(range(d) for d in ref.shape)):
            values = covering_values(reference, updates, name, idx)
            if values:
                res[idx] = reduce(np.array(values))
        out[name] = res
    return out


def trimmed_by_hand(values, fraction):
    values = np.sort(values)
    cut = int(np.floor(fraction * len(values)))
    return values[cut : len(values) - cut].mean()


@FAST
@given(federations())
def test_median_is_each_entrys_median_over_the_members_that_cover_it(fed):
    reference, updates = fed
    out = coordinate_median(updates, reference)
    expected = by_hand(reference, updates, np.median)
    for name in reference:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-12, atol=1e-9)


@FAST
@given(federations())
def test_trimmed_mean_drops_the_extremes_of_each_entrys_covering_values(fed):
    reference, updates = fed
    for fraction in (0.0, 0.2, 0.34, 0.49):
        out = trimmed_mean(updates, reference, fraction)
        expected = by_hand(reference, updates, lambda v, f=fraction: trimmed_by_hand(v, f))
        for name in reference:
            np.testing.assert_allclose(out[name], expected[name], rtol=1e-12, atol=1e-9)


def test_median_and_trimmed_mean_by_hand_with_partial_coverage():
    ref = {"w": np.full(3, 7.0), "b": np.zeros(1)}
    ups = [
        Update({"w": np.array([1.0, 10.0, 5.0])}),
        Update({"w": np.array([2.0, 20.0])}),  # narrower: covers entries 0 and 1
        Update({"w": np.array([3.0, 30.0, 6.0]), "b": np.array([4.0])}),
        Update({"w": np.array([100.0, 40.0, 9.0])}, masks={"w": np.array([True, True, False])}),
    ]
    med = coordinate_median(ups, ref)
    np.testing.assert_allclose(med["w"], [2.5, 25.0, 5.5])
    np.testing.assert_allclose(med["b"], [4.0])
    tm = trimmed_mean(ups, ref, 0.25)  # k=4: drop one each side; k=2: drop none
    np.testing.assert_allclose(tm["w"], [2.5, 25.0, 5.5])
    np.testing.assert_allclose(tm["b"], [4.0])
    nobody = coordinate_median([Update({"b": np.ones(1)})], ref)
    np.testing.assert_array_equal(nobody["w"], ref["w"])  # uncovered: the reference


def test_zero_weights_take_no_part_and_other_weights_do_not_weigh():
    ref = {"w": np.zeros(1)}
    ups = [Update({"w": np.array([1.0])}, 1.0), Update({"w": np.array([2.0])}, 100.0)]
    ups.append(Update({"w": np.array([1e9])}, 0.0))
    assert coordinate_median(ups, ref)["w"][0] == 1.5
    assert trimmed_mean(ups, ref, 0.0)["w"][0] == 1.5
    assert krum_select(ups, ref, 0, keep=5) == [0, 1]


def test_integer_buffers_are_rounded_by_every_rule():
    ref = {"n": np.zeros(1, np.int64), "w": np.zeros(2, np.float32)}
    ups = [Update({"n": np.array([k]), "w": np.full(2, k, np.float32)}) for k in (1, 2, 4, 5)]
    for rule in RULES:
        out = robust_mean(ups, ref, rule)
        assert out["n"].dtype == np.int64 and out["w"].dtype == np.float32, rule
    assert robust_mean(ups, ref, "median")["n"][0] == 3  # 3.0 from (2 + 4) / 2


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum"])
def test_a_scaled_minority_does_not_move_the_result_far(rule):
    rng = np.random.default_rng(0)
    ref = {"w": np.zeros(50)}
    honest = [Update({"w": 0.1 + 0.01 * rng.normal(size=50)}, 10.0) for _ in range(8)]
    attack = [Update({"w": -100 * u.arrays["w"]}, 10.0) for u in honest[:2]]
    clean = partial_mean(honest, ref)["w"]
    attacked = robust_mean(honest + attack, ref, rule, trim_fraction=0.2, byzantine=2)["w"]
    assert np.abs(attacked - clean).max() < 0.05, rule
    assert np.abs(partial_mean(honest + attack, ref)["w"] - clean).max() > 1.0  # plain mean


def test_krum_scores_match_the_definition():
    ref = {"w": np.zeros(1)}
    values = [0.0, 0.1, 0.3, 5.0, 9.0]
    ups = [Update({"w": np.array([v])}) for v in values]
    f = 1
    closest = len(values) - f - 2
    scores = []
    for i, v in enumerate(values):
        d = sorted((v - w) ** 2 for j, w in enumerate(values) if j != i)
        scores.append(sum(d[:closest]))
    assert krum_select(ups, ref, f) == [int(np.argmin(scores))]
    order = np.argsort(scores, kind="stable")
    assert krum_select(ups, ref, f, keep=3) == sorted(order[:3].tolist())
    multi = robust_mean(ups, ref, "multi_krum", byzantine=f)["w"][0]
    kept = sorted(order[: len(values) - f].tolist())
    assert multi == pytest.approx(np.mean([values[i] for i in kept]))


def test_krum_compares_partial_updates_on_what_they_propose():
    ref = {"a": np.zeros(2), "b": np.zeros(2)}
    ups = [
        Update({"a": np.ones(2)}),  # proposes no change of "b"
        Update({"a": np.ones(2), "b": np.zeros(2)}),
        Update({"b": np.full(2, 50.0)}),
    ]
    assert krum_select(ups, ref, 0) in ([0], [1])
    out = robust_mean(ups, ref, "krum")
    np.testing.assert_allclose(out["a"], [1.0, 1.0])
    np.testing.assert_allclose(out["b"], [0.0, 0.0])


def test_clipping_bounds_each_change_and_keeps_its_direction():
    ref = {"w": np.ones(2, np.float32), "n": np.zeros(1, np.int64)}
    big = Update({"w": np.array([4.0, 5.0], np.float32), "n": np.array([9])}, 2.0)  # Δ=(3,4)
    small = Update({"w": np.array([1.3, 1.4], np.float32)}, 1.0)  # Δ=(.3,.4), norm .5
    assert update_norms([big, small], ref) == pytest.approx([5.0, 0.5])
    clipped = clip_updates([big, small], ref, 1.0)
    np.testing.assert_allclose(clipped[0].arrays["w"], [1.6, 1.8])
    assert clipped[0].arrays["n"][0] == 9 and clipped[0].weight == 2.0
    assert clipped[1] is small  # within the bound: untouched
    med = clip_updates([big, small, small], ref, "median")
    assert update_norms(med, ref) == pytest.approx([0.5, 0.5, 0.5], rel=1e-6)
    with pytest.raises(ValueError):
        clip_updates([big], ref, "mean")
    with pytest.raises(ValueError):
        clip_updates([big], ref, -1.0)


def test_clipping_counts_only_covered_entries():
    ref = {"w": np.zeros(3)}
    masked = Update({"w": np.array([3.0, 4.0, 1e6])}, masks={"w": np.array([True, True, False])})
    narrow = Update({"w": np.array([3.0, 4.0])})
    assert update_norms([masked, narrow], ref) == pytest.approx([5.0, 5.0])
    out = robust_mean([masked, narrow], ref, "mean", clip_norm=1.0)["w"]
    np.testing.assert_allclose(out, [0.6, 0.8, 0.0])


def test_plain_mean_is_partial_mean_exactly_and_unknown_rules_are_refused():
    rng = np.random.default_rng(1)
    ref = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    ups = [Update({"w": rng.normal(size=(3, 2)).astype(np.float32)}, w) for w in (1.0, 3.0)]
    np.testing.assert_array_equal(robust_mean(ups, ref)["w"], partial_mean(ups, ref)["w"])
    with pytest.raises(ValueError, match="unknown aggregation rule 'mode'"):
        robust_mean(ups, ref, "mode")
    with pytest.raises(ValueError):
        trimmed_mean(ups, ref, 0.5)
    with pytest.raises(ValueError):
        krum_select(ups, ref, -1)


def test_noisy_clipped_mean_without_noise_is_the_clipped_sum_over_a_fixed_denominator():
    ref = {"w": np.zeros(2), "n": np.array([3], np.int64)}
    ups = [
        Update({"w": np.array([3.0, 4.0]), "n": np.array([7])}, 5.0),  # clipped to (.6, .8)
        Update({"w": np.array([0.1, 0.0])}, 1.0),
        Update({"w": np.array([1e6, 1e6])}, 0.0),  # takes no part
    ]
    out = noisy_clipped_mean(ups, ref, 1.0, 0.0, 4.0, np.random.default_rng(0))
    np.testing.assert_allclose(out["w"], [0.7 / 4, 0.8 / 4])
    assert out["n"][0] == 3  # integer buffers are not released


def test_noisy_clipped_mean_adds_gaussian_noise_of_the_stated_scale():
    ref = {"w": np.zeros(200_000, np.float32)}
    out = noisy_clipped_mean([], ref, 2.0, 1.5, 10.0, np.random.default_rng(3))["w"]
    assert out.std() == pytest.approx(1.5 * 2.0 / 10.0, rel=0.01)
    assert abs(out.mean()) < 0.01
    again = noisy_clipped_mean([], ref, 2.0, 1.5, 10.0, np.random.default_rng(3))["w"]
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ValueError):
        noisy_clipped_mean([], ref, 1.0, 1.0, 0.0, np.random.default_rng(0))
