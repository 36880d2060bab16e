"""Property tests for the invariants every method rests on: aggregation, seeds, validation."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from consortium.core import InvalidReply, Message, ReplySpec, Update, derive_seed, partial_mean
from consortium.core.validation import check_arrays, check_message

# no deadline and no too-slow check: a loaded machine (or mutmut's workers) must not fail them
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- partial_mean


@st.composite
def federations(draw):
    """A reference of 1-2 arrays and 1-4 updates: missing names, corners, masks, any weight."""
    ndim = draw(st.integers(1, 2))
    names = ["a", "b"][: draw(st.integers(1, 2))]
    shapes = {
        k: tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))) for k in names
    }
    values = st.floats(-1e3, 1e3, allow_nan=False, width=64)
    reference = {k: draw(hnp.arrays(np.float64, s, elements=values)) for k, s in shapes.items()}
    updates = []
    for _ in range(draw(st.integers(1, 4))):
        weight = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0, 1e-3, 250.0]))
        arrays, masks = {}, {}
        for k, full in shapes.items():
            if not draw(st.booleans()):
                continue  # this member did not train k
            shape = tuple(draw(st.integers(1, d)) for d in full)  # a leading corner
            arrays[k] = draw(hnp.arrays(np.float64, shape, elements=values))
            if draw(st.booleans()):
                masks[k] = draw(hnp.arrays(np.bool_, shape))
        updates.append(Update(arrays, weight, masks or None))
    return reference, updates


def mean_by_hand(reference, updates):
    """Entry by entry: the weighted mean over the members that cover it, else the reference."""
    out = {}
    for name, ref in reference.items():
        res = ref.copy()
        for idx in itertools.product(*(range(d) for d in ref.shape)):
            num = den = 0.0
            for u in updates:
                arr = u.arrays.get(name)
                if arr is None or u.weight <= 0:
                    continue
                if any(i >= d for i, d in zip(idx, arr.shape, strict=True)):
                    continue  # outside the corner this member trained
                if u.masks is not None and name in u.masks and not u.masks[name][idx]:
                    continue
                num += u.weight * arr[idx]
                den += u.weight
            if den > 0:
                res[idx] = num / den
        out[name] = res
    return out


@FAST
@given(federations())
def test_partial_mean_is_the_mean_over_covering_members(fed):
    reference, updates = fed
    got = partial_mean(updates, reference)
    want = mean_by_hand(reference, updates)
    assert list(got) == list(reference)
    for k in reference:
        assert got[k].dtype == reference[k].dtype and got[k].shape == reference[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-9)


@FAST
@given(federations(), st.floats(0.01, 100.0))
def test_partial_mean_ignores_the_scale_of_the_weights(fed, scale):
    reference, updates = fed
    scaled = [Update(u.arrays, u.weight * scale, u.masks) for u in updates]
    for k, v in partial_mean(scaled, reference).items():
        np.testing.assert_allclose(v, partial_mean(updates, reference)[k], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- derive_seed

# Names are strings (hashed by crc32) or ids (non-negative integers), never mixed in one
# position: crc32 maps "" to 0, and any string to some integer it then cannot be told from.
names = st.one_of(
    st.lists(st.text(max_size=12), min_size=2, max_size=20, unique=True),
    st.lists(st.integers(0, 2**40), min_size=2, max_size=20, unique=True),
)


@FAST
@given(st.integers(0, 2**32), names)
def test_derived_seeds_are_distinct_over_names(seed, parts):
    seeds = [derive_seed(seed, "purpose", p) for p in parts]
    # two strings meet under crc32 once in 2**32 pairs: not something Hypothesis stumbles on
    assert len(set(seeds)) == len(parts)
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [derive_seed(seed, "purpose", p) for p in parts]  # stable


@FAST
@given(st.integers(0, 2**32), st.integers(0, 2**32), st.integers(0, 1000))
def test_derived_seeds_depend_on_the_run_seed_and_the_order_of_parts(a, b, rnd):
    if a != b:
        assert derive_seed(a, "client", rnd) != derive_seed(b, "client", rnd)
    assert derive_seed(a, "client", rnd, 1) != derive_seed(a, "client", 1, rnd) or rnd == 1


# ---------------------------------------------------------------- validation

SPEC = ReplySpec.like({"w": np.zeros((3, 2), np.float32)})


def reply(array):
    return Message("train", arrays={"w": array})


@FAST
@given(hnp.arrays(np.float32, (3, 2), elements=st.floats(width=32)))
def test_non_finite_arrays_are_rejected(array):
    if np.isfinite(array).all():
        check_message(reply(array), "train")
        check_arrays(reply(array), SPEC)
    else:
        with pytest.raises(InvalidReply, match="NaN or Inf"):
            check_message(reply(array), "train")


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_non_finite_metrics_are_rejected(value):
    msg = Message("train", metrics={"loss": value})
    if np.isfinite(value):
        check_message(msg, "train")
    else:
        with pytest.raises(InvalidReply, match="metric 'loss'"):
            check_message(msg, "train")


unsupported = st.one_of(
    hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(),
    hnp.byte_string_dtypes(),
    hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(),
    st.just(np.dtype(object)),
    st.just(np.dtype([("x", "f4"), ("y", "i4")])),
)


@FAST
@given(unsupported)
def test_unsupported_dtypes_are_rejected(dtype):
    with pytest.raises(InvalidReply, match="unsupported dtype"):
        check_message(reply(np.zeros((3, 2), dtype)), "train")


@FAST
@given(hnp.scalar_dtypes().filter(lambda d: d.kind in "biuf" and d != np.float32))
def test_supported_but_unexpected_dtypes_are_rejected_by_the_spec(dtype):
    msg = reply(np.zeros((3, 2), dtype))
    check_message(msg, "train")
    with pytest.raises(InvalidReply, match="dtype"):
        check_arrays(msg, SPEC)


@FAST
@given(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
def test_wrong_shapes_are_rejected(shape):
    msg = reply(np.zeros(shape, np.float32))
    if shape == (3, 2):
        check_arrays(msg, SPEC)
        return
    with pytest.raises(InvalidReply, match="shape"):
        check_arrays(msg, SPEC)
    smaller_ok = len(shape) == 2 and shape[0] <= 3 and shape[1] <= 2
    loose = ReplySpec.like({"w": np.zeros((3, 2), np.float32)}, allow_smaller=True)
    if smaller_ok:
        check_arrays(msg, loose)
    else:
        with pytest.raises(InvalidReply, match=r"shape|exceeds"):
            check_arrays(msg, loose)


def test_object_arrays_are_rejected():
    with pytest.raises(InvalidReply, match="unsupported dtype object"):
        check_message(reply(np.array([[1.0, 2.0]] * 3, dtype=object)), "train")


def test_masked_arrays_are_rejected():
    hidden_nan = np.ma.masked_invalid(np.array([[np.nan, 1.0]] * 3, np.float32))
    with pytest.raises(InvalidReply):
        check_message(reply(hidden_nan), "train")


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrices_are_rejected():
    with pytest.raises(InvalidReply):
        check_message(reply(np.asmatrix(np.zeros((3, 2), np.float32))), "train")
