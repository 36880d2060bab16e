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
