import numpy as np
import pytest

from consortium.core import InvalidReply, Message, ReplySpec
from consortium.core.validation import check_arrays, check_message

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def good() -> Message:
    return Message("train", arrays={k: v.copy() for k, v in REF.items()}, metrics={"n": 4.0})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.arrays.__setitem__("w", np.full((2, 3), np.nan, np.float32)), "NaN"),
        (lambda m: m.arrays.__setitem__("b", np.array([0, np.inf, 0], np.float32)), "NaN or Inf"),
        (lambda m: m.arrays.__setitem__("w", np.zeros((3, 2), np.float32)), "shape"),
        (lambda m: m.arrays.__setitem__("w", np.zeros((2, 3), np.float64)), "dtype"),
        (lambda m: m.arrays.__setitem__("extra", np.zeros(1, np.float32)), "unexpected"),
        (lambda m: m.arrays.pop("b"), "missing"),
        (lambda m: m.metrics.__setitem__("loss", float("nan")), "metric"),
        (lambda m: setattr(m, "kind", "evaluate"), "kind"),
        (lambda m: m.arrays.__setitem__("w", np.array([["a"] * 3] * 2)), "dtype"),
    ],
)
def test_malformed_replies_are_rejected(mutate, reason):
    msg = good()
    mutate(msg)
    with pytest.raises(InvalidReply, match=reason):
        check_message(msg, "train")
        check_arrays(msg, ReplySpec.like(REF))


def test_good_reply_passes_and_size_limit_applies():
    msg = good()
    check_message(msg, "train")
    check_arrays(msg, ReplySpec.like(REF))
    with pytest.raises(InvalidReply, match="exceeds"):
        check_message(msg, "train", max_bytes=10)


def test_partial_and_smaller_specs():
    msg = Message("train", arrays={"w": np.zeros((1, 3), np.float32)})
    check_arrays(msg, ReplySpec.like(REF, require_all=False, allow_smaller=True))
    with pytest.raises(InvalidReply):
        check_arrays(msg, ReplySpec.like(REF, require_all=False))
    big = Message("train", arrays={"w": np.zeros((3, 3), np.float32)})
    with pytest.raises(InvalidReply, match="exceeds"):
        check_arrays(big, ReplySpec.like(REF, require_all=False, allow_smaller=True))


def test_not_a_message_is_rejected():
    with pytest.raises(InvalidReply):
        check_message({"kind": "train"}, "train")


def test_nbytes_counts_payload():
    msg = good()
    assert msg.nbytes >= REF["w"].nbytes + REF["b"].nbytes
    assert Message("x").nbytes < 16
