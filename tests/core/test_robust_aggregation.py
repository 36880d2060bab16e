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


# --- edges that the cases above leave open ----------------------------------------------------


def krum_by_hand(updates, reference, byzantine, keep):
    """Krum straight from the definition: full-shaped deltas, pairwise squared distances."""
    live = [i for i, u in enumerate(updates) if u.weight > 0]
    if len(live) <= 1:
        return live
    flat = []
    for i in live:
        parts = []
        for name, ref in reference.items():
            if ref.dtype.kind != "f":
                continue
            d = np.zeros(ref.shape)
            if name in updates[i].arrays:
                arr = updates[i].arrays[name]
                corner = tuple(slice(0, s) for s in arr.shape)
                d[corner] = arr - ref[corner]
            parts.extend(d.ravel().tolist())
        flat.append(parts)
    closest = max(1, len(live) - byzantine - 2)
    scores = []
    for a, x in enumerate(flat):
        dists = sorted(
            sum((p - q) ** 2 for p, q in zip(x, y, strict=True))
            for b, y in enumerate(flat)
            if b != a
        )
        scores.append(sum(dists[:closest]))
    order = sorted(range(len(live)), key=lambda a: scores[a])[:keep]  # ties: earlier first
    return sorted(live[a] for a in order)


def test_krum_selection_matches_the_definition_on_random_federations():
    rng = np.random.default_rng(7)
    for _ in range(60):
        n, dim = int(rng.integers(2, 9)), int(rng.integers(1, 4))
        ref = {"w": rng.integers(-3, 4, size=dim).astype(np.float64), "n": np.zeros(1, int)}
        ups = []
        for _ in range(n):
            width = int(rng.integers(1, dim + 1))  # some members train a leading corner
            arrays = {"w": rng.integers(-5, 6, size=width).astype(np.float64)}
            ups.append(Update(arrays, float(rng.choice([0.0, 1.0, 2.0], p=[0.15, 0.5, 0.35]))))
        byzantine, keep = int(rng.integers(0, 4)), int(rng.integers(1, n + 2))
        assert krum_select(ups, ref, byzantine, keep) == krum_by_hand(ups, ref, byzantine, keep)


def test_krum_breaks_ties_in_favour_of_earlier_members():
    # 21 members at 0 and 19 at 1: every 0 scores 18, every 1 scores 20 (byzantine=0)
    values = [0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0]
    values += [1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    ups = [Update({"w": np.array([float(v)])}) for v in values]
    zeros = [i for i, v in enumerate(values) if v == 0]
    assert krum_select(ups, {"w": np.zeros(1)}, 0, keep=10) == zeros[:10]


def test_krum_of_two_picks_one_and_of_one_or_none_returns_it():
    ref = {"w": np.zeros(2)}
    two = [Update({"w": np.array([1.0, 0.0])}), Update({"w": np.array([0.0, 3.0])})]
    assert krum_select(two, ref, 0) == [0]  # equal scores: the earlier one
    assert krum_select(two, ref, 0, keep=2) == [0, 1]
    assert krum_select([Update({"w": np.ones(2)}, 0.0), two[1]], ref, 0, keep=3) == [1]
    assert krum_select([Update({"w": np.ones(2)}, 0.0)], ref, 0) == []


def test_krum_without_float_arrays_compares_nothing():
    ref = {"n": np.zeros(2, np.int64)}
    ups = [Update({"n": np.array([k, k])}) for k in (5, 1, 3)]
    assert krum_select(ups, ref, 0) == [0]
    assert krum_select(ups, ref, 0, keep=2) == [0, 1]


def test_bad_parameters_are_refused_with_a_message():
    ref = {"w": np.zeros(2)}
    ups = [Update({"w": np.ones(2)})]
    with pytest.raises(ValueError, match=r"^need byzantine >= 0 and keep >= 1, got -1 and 1$"):
        krum_select(ups, ref, -1)
    with pytest.raises(ValueError, match=r"^need byzantine >= 0 and keep >= 1, got 0 and 0$"):
        krum_select(ups, ref, 0, keep=0)
    with pytest.raises(ValueError, match=r"^trim fraction must be in \[0, 0.5\), got -0.1$"):
        trimmed_mean(ups, ref, -0.1)
    with pytest.raises(ValueError, match=r"^max_norm must be a number or 'median', got 'mean'$"):
        clip_updates(ups, ref, "mean")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"^max_norm must be finite and >= 0, got {bad}$"):
            clip_updates(ups, ref, bad)
    with pytest.raises(ValueError, match=r"^denominator must be > 0, got 0.0$"):
        noisy_clipped_mean(ups, ref, 1.0, 1.0, 0.0, np.random.default_rng(0))
    msg = r"^need noise_multiplier >= 0 and clip_norm > 0, got {}, {}$"
    for noise, clip in ((-0.5, 1.0), (1.0, 0.0), (1.0, -2.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match=msg.format(noise, clip)):
            noisy_clipped_mean(ups, ref, clip, noise, 1.0, np.random.default_rng(0))
    known = "mean, median, trimmed_mean, krum, multi_krum"
    with pytest.raises(ValueError, match=rf"^unknown aggregation rule 'mode'; known: {known}$"):
        robust_mean(ups, ref, "mode")


def test_clipping_at_zero_at_the_bound_and_with_the_median_of_the_counted():
    ref = {"w": np.zeros(2, np.float32)}
    five = Update({"w": np.array([3.0, 4.0], np.float32)})
    assert clip_updates([five], ref, 5.0)[0] is five  # exactly at the bound: untouched
    zeroed = clip_updates([five], ref, 0.0)[0]
    np.testing.assert_array_equal(zeroed.arrays["w"], [0.0, 0.0])
    one = clip_updates([five], ref, 1.0)[0].arrays["w"]
    assert one.dtype == np.float64  # the scaled change is computed in float64
    np.testing.assert_array_equal(one, np.array([3.0, 4.0]) * (1.0 / 5.0))
    # the median counts only members that take part ...
    small = Update({"w": np.array([0.6, 0.8], np.float32)})  # norm 1
    idle = Update({"w": np.array([30.0, 40.0], np.float32)}, 0.0)  # weight 0: norm 0
    assert update_norms([idle], ref) == [0.0]
    clipped = clip_updates([five, small, idle], ref, "median")  # median of (5, 1) = 3
    assert update_norms(clipped, ref)[:2] == pytest.approx([3.0, 1.0], rel=1e-6)
    # ... and with none that does there is no median (and nothing to clip)
    assert clip_updates([idle], ref, "median") == [idle]
    assert clip_updates([], ref, "median") == []


def test_norms_and_noise_skip_integer_arrays_wherever_they_stand():
    ref = {"n": np.zeros(1, np.int64), "w": np.zeros(2), "m": np.zeros(1, np.int32)}
    up = Update({"n": np.array([100]), "w": np.array([3.0, 4.0]), "m": np.array([7])})
    assert update_norms([up], ref) == [5.0]
    out = noisy_clipped_mean([up], ref, 10.0, 0.0, 2.0, np.random.default_rng(0))
    assert list(out) == ["n", "w", "m"]
    np.testing.assert_allclose(out["w"], [1.5, 2.0])
    assert out["n"][0] == 0 and out["m"][0] == 0


def test_noisy_clipped_mean_is_reference_plus_sum_plus_the_drawn_noise():
    ref = {"w": np.array([1.0, -1.0, 0.5])}
    ups = [Update({"w": np.array([2.0, -1.0, 0.5])}), Update({"w": np.array([1.0, 0.0])}, 3.0)]
    out = noisy_clipped_mean(ups, ref, 10.0, 0.7, 0.5, np.random.default_rng(11))["w"]
    noise = np.random.default_rng(11).normal(0.0, 0.7 * 10.0, 3)
    total = np.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(out, ref["w"] + (total + noise) / 0.5, rtol=1e-12)


def test_only_the_all_nan_warning_of_a_reduction_is_silenced():
    from consortium.core.aggregation import _per_entry

    def loud(stack):
        import warnings

        warnings.warn("a reduction that warns", UserWarning, stacklevel=1)
        return np.nanmax(stack, axis=0)

    ref = {"w": np.zeros(2)}
    ups = [Update({"w": np.array([1.0])}), Update({"w": np.array([2.0])})]
    with pytest.warns(UserWarning, match="a reduction that warns"):
        out = _per_entry(ups, ref, loud)
    np.testing.assert_array_equal(out["w"], [2.0, 0.0])


def test_krum_returns_the_chosen_update_and_multi_krum_keeps_live_minus_byzantine():
    ref = {"w": np.zeros(1)}
    values = [0.0, 0.1, 0.3, 5.0, 9.0]
    ups = [Update({"w": np.array([v])}) for v in values]
    chosen = krum_select(ups, ref, 0)
    assert robust_mean(ups, ref, "krum")["w"][0] == values[chosen[0]]  # one update, not two
    # multi_krum keeps n - byzantine by default, and byzantine defaults to 0: all of them
    assert robust_mean(ups, ref, "multi_krum")["w"][0] == pytest.approx(np.mean(values))
    # members with zero weight do not count among the n
    idle = Update({"w": np.array([1e6])}, 0.0)
    near = [Update({"w": np.array([v])}) for v in (0.0, 0.1, 10.0)] + [idle]
    assert robust_mean(near, ref, "multi_krum", byzantine=1)["w"][0] == pytest.approx(0.05)
    # at least one is kept however many may be byzantine
    assert robust_mean(near, ref, "multi_krum", byzantine=2)["w"][0] == 0.0  # tie: the first
    assert robust_mean(near, ref, "multi_krum", byzantine=5)["w"][0] == 0.0
