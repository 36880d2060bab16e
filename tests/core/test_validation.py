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
