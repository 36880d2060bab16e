import numpy as np
import pytest

from consortium.core import (
    Update,
    coverage,
    gather_masked,
    partial_mean,
    scatter_masked,
    weighted_mean,
)


def test_weighted_mean_matches_formula():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.0], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32), "b": np.array([4.0], np.float32)}
    out = weighted_mean([Update(a, 1.0), Update(b, 3.0)])
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_weighted_mean_rejects_mismatched_updates():
    with pytest.raises(ValueError):
        weighted_mean([Update({"w": np.zeros(2)}), Update({"v": np.zeros(2)})])
    with pytest.raises(ValueError):
        weighted_mean([Update({"w": np.zeros(2)}), Update({"w": np.zeros(3)})])
    with pytest.raises(ValueError):
        weighted_mean([])


def test_partial_mean_averages_each_layer_over_those_who_sent_it():
    ref = {"l0": np.zeros(2), "l1": np.full(2, 9.0), "l2": np.full(2, -1.0)}
    u1 = Update({"l0": np.ones(2), "l1": np.ones(2)}, 1.0)
    u2 = Update({"l0": np.full(2, 3.0)}, 1.0)
    out = partial_mean([u1, u2], ref)
    np.testing.assert_allclose(out["l0"], [2.0, 2.0])  # both
    np.testing.assert_allclose(out["l1"], [1.0, 1.0])  # only u1
    np.testing.assert_allclose(out["l2"], [-1.0, -1.0])  # nobody: reference kept


def test_partial_mean_smaller_tensors_cover_the_leading_corner():
    ref = {"w": np.zeros((3, 2))}
    full = Update({"w": np.full((3, 2), 4.0)}, 1.0)
    narrow = Update({"w": np.full((1, 2), 2.0)}, 1.0)
    out = partial_mean([full, narrow], ref)["w"]
    np.testing.assert_allclose(out[0], [3.0, 3.0])
    np.testing.assert_allclose(out[1:], 4.0)


def test_partial_mean_masks_count_only_true_entries():
    ref = {"w": np.array([10.0, 10.0, 10.0])}
    u1 = Update({"w": np.array([1.0, 1.0, 1.0])}, 2.0, masks={"w": np.array([True, False, False])})
    u2 = Update({"w": np.array([4.0, 4.0, 4.0])}, 1.0, masks={"w": np.array([True, True, False])})
    out = partial_mean([u1, u2], ref)["w"]
    np.testing.assert_allclose(out, [2.0, 4.0, 10.0])
    cov = coverage([u1, u2], ref)
    assert cov["w"] == pytest.approx(2 / 3)


def test_partial_mean_rejects_bad_input():
    ref = {"w": np.zeros(2)}
    with pytest.raises(KeyError):
        partial_mean([Update({"x": np.zeros(2)})], ref)
    with pytest.raises(ValueError):
        partial_mean([Update({"w": np.zeros(3)})], ref)
    with pytest.raises(ValueError):
        partial_mean([Update({"w": np.zeros(2)}, weight=-1.0)], ref)


def test_integer_buffers_are_rounded():
    ref = {"n": np.array([0], np.int64)}
    out = partial_mean([Update({"n": np.array([1])}, 1.0), Update({"n": np.array([2])}, 2.0)], ref)
    assert out["n"].dtype == np.int64 and out["n"][0] == 2


def test_gather_scatter_masked_roundtrip():
    rng = np.random.default_rng(0)
    ref = {"w": rng.normal(size=(4, 3))}
    mask = {"w": rng.random((4, 3)) > 0.5}
    new = {"w": ref["w"] + 1}
    packed = gather_masked(new, mask)
    assert packed["w"].shape == (int(mask["w"].sum()),)
    back = scatter_masked(packed, mask, ref)["w"]
    np.testing.assert_allclose(back[mask["w"]], new["w"][mask["w"]])
    np.testing.assert_allclose(back[~mask["w"]], ref["w"][~mask["w"]])
    with pytest.raises(ValueError):
        scatter_masked({"w": packed["w"][:-1]}, mask, ref)


def test_zero_and_fractional_weights():
    ref = {"w": np.zeros(2)}
    a = Update({"w": np.array([1.0, 1.0])}, 0.25)
    b = Update({"w": np.array([5.0, 9.0])}, 0.75)
    ignored = Update({"w": np.array([1e6, 1e6])}, 0.0)  # weight 0: left out, not an error
    np.testing.assert_allclose(partial_mean([a, ignored, b], ref)["w"], [4.0, 7.0])
    only_zero = partial_mean([ignored], ref)["w"]
    np.testing.assert_array_equal(only_zero, [0.0, 0.0])  # nobody counted: reference kept
    np.testing.assert_allclose(weighted_mean([a, b, ignored])["w"], [4.0, 7.0])
    # weights below one that sum below one are a valid weighting, not "all zero"
    np.testing.assert_allclose(
        weighted_mean([Update(a.arrays, 0.1), Update(b.arrays, 0.3)])["w"], [4.0, 7.0]
    )


def test_weighted_mean_with_all_zero_weights_raises():
    u = {"w": np.ones(2)}
    with pytest.raises(ValueError, match=r"^weights of the updates sum to zero$"):
        weighted_mean([Update(u, 0.0), Update(u, 0.0)])


@pytest.mark.parametrize("weight", [-1.0, -1e-9, float("nan"), float("inf")])
def test_bad_weights_are_rejected_with_the_value(weight):
    with pytest.raises(ValueError, match=r"^update weight must be finite and >= 0, got "):
        partial_mean([Update({"w": np.zeros(2)}, weight)], {"w": np.zeros(2)})


def test_error_messages_name_the_problem():
    ref = {"w": np.zeros(2)}
    with pytest.raises(KeyError, match=r"the reference lacks: \['a', 'b', 'c'\]"):
        partial_mean([Update({k: np.zeros(2) for k in "dcba"})], ref)
    with pytest.raises(ValueError, match=r"^update 'w' of shape \(3,\) does not fit \(2,\)$"):
        partial_mean([Update({"w": np.zeros(3)})], ref)
    with pytest.raises(ValueError, match=r"^update 'w' of shape \(1, 2\) does not fit \(2,\)$"):
        partial_mean([Update({"w": np.zeros((1, 2))})], ref)
    bad_mask = Update({"w": np.zeros(2)}, masks={"w": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"^mask 'w' of shape \(3,\) != array \(2,\)$"):
        partial_mean([bad_mask], ref)
    with pytest.raises(ValueError, match=r"^cannot average zero updates$"):
        weighted_mean([])
    with pytest.raises(ValueError, match=r"^weighted_mean needs updates with identical array "):
        weighted_mean([Update({"w": np.zeros(2)}), Update({"v": np.zeros(2)})])
    with pytest.raises(ValueError, match=r"^array 'w' has shape \(3,\) in one update, \(2,\) in"):
        weighted_mean([Update({"w": np.zeros(2)}), Update({"w": np.zeros(3)})])


def test_an_update_lacking_a_layer_does_not_hide_later_updates():
    ref = {"a": np.zeros(2), "b": np.zeros(2)}
    first = Update({"a": np.ones(2)}, 1.0)  # did not train "b"
    later = Update({"a": np.full(2, 3.0), "b": np.full(2, 5.0)}, 1.0)
    out = partial_mean([first, later], ref)
    np.testing.assert_allclose(out["a"], [2.0, 2.0])
    np.testing.assert_allclose(out["b"], [5.0, 5.0])
    zero_first = partial_mean([Update({"b": np.ones(2)}, 0.0), later], ref)
    np.testing.assert_allclose(zero_first["b"], [5.0, 5.0])


def test_an_untrained_layer_does_not_stop_the_layers_after_it():
    ref = {"frozen": np.full(2, 7.0), "trained": np.zeros(2)}
    out = partial_mean([Update({"trained": np.ones(2)})], ref)
    assert list(out) == ["frozen", "trained"]
    np.testing.assert_allclose(out["frozen"], [7.0, 7.0])
    np.testing.assert_allclose(out["trained"], [1.0, 1.0])
    assert out["frozen"] is not ref["frozen"]  # a copy: the caller may change the reference


def test_masks_are_truth_values_counted_once():
    # a mask given as integers (e.g. from torch) counts each non-zero entry once, whatever its value
    ref = {"w": np.zeros(3)}
    u = Update({"w": np.array([2.0, 4.0, 6.0])}, 1.0, masks={"w": np.array([3, 0, 1])})
    v = Update({"w": np.array([4.0, 4.0, 4.0])}, 1.0)
    np.testing.assert_allclose(partial_mean([u, v], ref)["w"], [3.0, 4.0, 5.0])
    assert coverage([u], ref)["w"] == pytest.approx(2 / 3)
    packed = gather_masked(u.arrays, u.masks)
    np.testing.assert_array_equal(packed["w"], [2.0, 6.0])
    back = scatter_masked(packed, u.masks, ref)
    np.testing.assert_array_equal(back["w"], [2.0, 0.0, 6.0])


def test_float32_reference_keeps_its_dtype_and_float64_sums():
    ref = {"w": np.zeros(1, np.float32)}
    big, small = np.array([1e8], np.float32), np.array([1.0], np.float32)
    out = partial_mean([Update({"w": big}), Update({"w": small}), Update({"w": small})], ref)
    assert out["w"].dtype == np.float32
    assert out["w"][0] == np.float32((1e8 + 2.0) / 3)


def test_coverage_counts_regions_masks_and_positive_weights_only():
    ref = {"w": np.zeros((2, 2)), "b": np.zeros(4), "none": np.zeros(3), "empty": np.zeros(0)}
    narrow = Update({"w": np.ones((1, 2))}, 1.0)  # the leading row only, no mask
    masked = Update(
        {"b": np.ones(4)},
        1.0,
        masks={"b": np.array([True, True, False, False])},
    )
    later = Update({"b": np.ones(4)}, 1.0, masks={"b": np.array([False, False, False, True])})
    idle = Update({"none": np.ones(3), "b": np.ones(4)}, 0.0)
    cov = coverage([narrow, idle, masked, later], ref)
    assert cov == {"w": 0.5, "b": 0.75, "none": 0.0, "empty": 1.0}


def test_scatter_leaves_the_reference_untouched_and_checks_counts():
    ref = {"w": np.zeros(3)}
    mask = {"w": np.array([True, False, True])}
    out = scatter_masked({"w": np.array([1.0, 2.0])}, mask, ref)
    np.testing.assert_array_equal(out["w"], [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(ref["w"], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"^'w': got 3 values for 2 masked entries$"):
        scatter_masked({"w": np.ones(3)}, mask, ref)
