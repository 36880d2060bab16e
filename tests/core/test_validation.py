import re

import numpy as np
import pytest

from consortium.core import InvalidReply, Message, ReplySpec
from consortium.core.validation import ArraySpec, check_arrays, check_message

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def good() -> Message:
    return Message("train", arrays={k: v.copy() for k, v in REF.items()}, metrics={"n": 4.0})


def named(n: int) -> dict[str, np.ndarray]:
    return {f"a{i}": np.zeros(1, np.float32) for i in range(n)}


# Each function gets its own pytest.raises: a case must fail in the function that owns it.
@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda m: m.arrays.__setitem__("w", np.full((2, 3), np.nan, np.float32)),
            r"^array 'w' holds NaN or Inf$",
        ),
        (
            lambda m: m.arrays.__setitem__("b", np.array([0, np.inf, 0], np.float32)),
            r"^array 'b' holds NaN or Inf$",
        ),
        (lambda m: m.arrays.__setitem__("b", np.array([-np.inf], np.float64)), "NaN or Inf"),
        (
            lambda m: m.metrics.__setitem__("loss", float("nan")),
            r"^metric 'loss' is not a finite number: nan$",
        ),
        (lambda m: m.metrics.__setitem__("loss", "0.5"), "metric 'loss' is not a finite number"),
        (
            lambda m: setattr(m, "kind", "evaluate"),
            r"^reply kind 'evaluate' does not answer 'train'$",
        ),
        (
            lambda m: m.arrays.__setitem__("w", np.array([["a"] * 3] * 2)),
            r"^array 'w' has unsupported dtype <U1$",
        ),
        (lambda m: m.arrays.__setitem__("w", np.zeros((2, 3), np.complex64)), "unsupported dtype"),
        (lambda m: m.arrays.__setitem__("w", np.zeros((2, 3), object)), "unsupported dtype object"),
        (
            lambda m: m.arrays.__setitem__("w", [[0.0] * 3] * 2),
            r"^array 'w' is a list, not a numpy array$",
        ),
    ],
)
def test_check_message_rejects(mutate, reason):
    msg = good()
    mutate(msg)
    with pytest.raises(InvalidReply, match=reason):
        check_message(msg, "train")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda m: m.arrays.__setitem__("w", np.zeros((3, 2), np.float32)),
            r"^array 'w' has shape \(3, 2\), expected \(2, 3\)$",
        ),
        (
            lambda m: m.arrays.__setitem__("w", np.zeros(6, np.float32)),
            r"^array 'w' has shape \(6,\), expected \(2, 3\)$",
        ),
        (
            lambda m: m.arrays.__setitem__("w", np.zeros((2, 3), np.float64)),
            r"^array 'w' has dtype float64, expected float32$",
        ),
        (
            lambda m: m.arrays.__setitem__("extra", np.zeros(1, np.float32)),
            r"^unexpected arrays \['extra'\]$",
        ),
        (lambda m: m.arrays.pop("b"), r"^missing arrays \['b'\]$"),
    ],
)
def test_check_arrays_rejects(mutate, reason):
    msg = good()
    mutate(msg)
    with pytest.raises(InvalidReply, match=reason):
        check_arrays(msg, ReplySpec.like(REF))


def test_long_name_lists_are_cut_after_three():
    spec3 = ReplySpec.like(named(3))
    with pytest.raises(InvalidReply, match=r"^unexpected arrays \['x0', 'x1', 'x2'\]\.\.\.$"):
        check_arrays(Message("train", arrays={f"x{i}": np.zeros(1) for i in range(4)}), spec3)
    with pytest.raises(InvalidReply, match=r"^unexpected arrays \['x0', 'x1', 'x2'\]$"):
        check_arrays(Message("train", arrays={f"x{i}": np.zeros(1) for i in range(3)}), spec3)
    with pytest.raises(InvalidReply, match=r"^missing arrays \['a0', 'a1', 'a2'\]\.\.\.$"):
        check_arrays(Message("train"), ReplySpec.like(named(4)))
    with pytest.raises(InvalidReply, match=r"^missing arrays \['a0', 'a1', 'a2'\]$"):
        check_arrays(Message("train"), spec3)


def test_good_reply_passes_and_size_limit_applies():
    msg = good()
    check_message(msg, "train")
    check_arrays(msg, ReplySpec.like(REF))
    limit = rf"^reply of {msg.nbytes} bytes exceeds the limit of 10$"
    with pytest.raises(InvalidReply, match=limit):
        check_message(msg, "train", max_bytes=10)


def test_size_limit_is_inclusive():
    msg = good()
    check_message(msg, "train", max_bytes=msg.nbytes)
    check_arrays(msg, ReplySpec.like(REF, max_bytes=msg.nbytes))
    with pytest.raises(InvalidReply, match=r"exceeds the limit"):
        check_message(msg, "train", max_bytes=msg.nbytes - 1)
    spec = ReplySpec.like(REF, max_bytes=msg.nbytes - 1)
    assert spec.max_bytes == msg.nbytes - 1
    with pytest.raises(
        InvalidReply, match=rf"^reply of {msg.nbytes} bytes exceeds the limit of {msg.nbytes - 1}$"
    ):
        check_arrays(msg, spec)


def test_partial_and_smaller_specs():
    msg = Message("train", arrays={"w": np.zeros((1, 3), np.float32)})
    check_arrays(msg, ReplySpec.like(REF, require_all=False, allow_smaller=True))
    with pytest.raises(InvalidReply, match=r"has shape \(1, 3\), expected \(2, 3\)"):
        check_arrays(msg, ReplySpec.like(REF, require_all=False))
    big = Message("train", arrays={"w": np.zeros((3, 3), np.float32)})
    with pytest.raises(InvalidReply, match=r"^array 'w' of shape \(3, 3\) exceeds \(2, 3\)$"):
        check_arrays(big, ReplySpec.like(REF, require_all=False, allow_smaller=True))
    flat = Message("train", arrays={"w": np.zeros(3, np.float32)})
    with pytest.raises(InvalidReply, match=r"^array 'w' has shape \(3,\), expected \(2, 3\)$"):
        check_arrays(flat, ReplySpec.like(REF, require_all=False, allow_smaller=True))


def test_array_spec_is_exact_unless_told_otherwise():
    spec = ArraySpec.like(np.zeros((2, 3), np.float32))
    assert spec == ArraySpec((2, 3), np.dtype(np.float32), False)
    assert ArraySpec.like(np.zeros(2), allow_smaller=True).allow_smaller
    reply = ReplySpec.like(REF)
    assert reply.require_all and reply.max_bytes is None
    assert not any(s.allow_smaller for s in reply.arrays.values())


def test_not_a_message_is_rejected():
    with pytest.raises(InvalidReply, match=r"^reply is a dict, not a Message$"):
        check_message({"kind": "train"}, "train")
    with pytest.raises(InvalidReply, match=r"^reply is a NoneType, not a Message$"):
        check_message(None, "train")


def test_nbytes_counts_payload():
    msg = good()
    assert msg.nbytes >= REF["w"].nbytes + REF["b"].nbytes
    assert Message("x").nbytes < 16


# -- names, structure, sample counts and config: each rejection says which part failed -------


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ("metrics", r"^metric name 1 is a int, not a string$"),
        ("config", r"^config name 1 is a int, not a string$"),
        ("arrays", r"^array name 1 is a int, not a string$"),
    ],
)
def test_a_name_that_is_not_a_string_is_rejected_naming_the_part(part, reason):
    msg = good()
    value = {"metrics": 1.0, "config": 1.0, "arrays": np.zeros(1, np.float32)}[part]
    getattr(msg, part)[1] = value
    with pytest.raises(InvalidReply, match=reason):
        check_message(msg, "train")


@pytest.mark.parametrize("part", ["arrays", "config", "metrics"])
def test_a_part_that_is_not_a_dict_is_rejected_naming_its_type(part):
    msg = good()
    setattr(msg, part, [("a", 1.0)])
    with pytest.raises(InvalidReply, match=rf"^reply {part} is a list$"):
        check_message(msg, "train")


def test_sample_counts_lie_in_zero_to_max_count_inclusive():
    from consortium.core.validation import MAX_COUNT, SAMPLE_COUNTS

    for name in SAMPLE_COUNTS:
        for ok in (0, 0.0, 1, MAX_COUNT):
            check_message(Message("train", metrics={name: ok}), "train")
        for bad in (-1, -0.5, MAX_COUNT * 2):
            reason = re.escape(f"metric '{name}' = {float(bad)!r} is not a sample count")
            with pytest.raises(InvalidReply, match=f"^{reason}$"):
                check_message(Message("train", metrics={name: bad}), "train")
    # the bounds hold only for counts: another metric may be negative or huge
    check_message(Message("train", metrics={"loss": -1.0, "score": MAX_COUNT * 2}), "train")


def test_config_of_plain_finite_scalars_passes():
    msg = good()
    msg.config.update({"flag": True, "epochs": 2, "lr": 0.1, "zero": 0.0, "name": "fedavg"})
    check_message(msg, "train")


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ([0.1], r"^config 'lr' is a list, not a scalar$"),
        (None, r"^config 'lr' is a NoneType, not a scalar$"),
        (b"x", r"^config 'lr' is a bytes, not a scalar$"),
        (np.float64(0.1), r"^config 'lr' is a float64, not a scalar$"),
        (float("nan"), r"^config 'lr' is not finite: nan$"),
        (float("-inf"), r"^config 'lr' is not finite: -inf$"),
    ],
)
def test_config_that_is_not_a_finite_scalar_is_rejected(setting, reason):
    msg = good()
    msg.config["lr"] = setting
    with pytest.raises(InvalidReply, match=reason):
        check_message(msg, "train")
