import numpy as np
import pytest

from consortium.core import Message
from consortium.core.message import from_record, to_record


def test_nbytes_is_payload_plus_keys_plus_eight_bytes_per_scalar():
    msg = Message(
        "train",
        arrays={"w": np.zeros((2, 3), np.float32), "bb": np.zeros(4, np.int64)},
        config={"lr": 0.1},
        metrics={"loss": 1.0, "n": 3.0},
    )
    payload = 24 + 32
    keys = len("w") + len("bb") + len("lr") + len("loss") + len("n")
    assert msg.nbytes == payload + keys + 8 * 3 + len("train")
    assert Message("x").nbytes == 1


def test_reply_keeps_the_kind_and_copies_its_inputs():
    req = Message("evaluate", config={"width": 0.5})
    arrays = {"w": np.ones(2)}
    rep = req.reply(arrays=arrays, metrics={"n": 3}, config={"note": "x"})
    assert rep.kind == "evaluate"
    assert rep.config == {"note": "x"} and rep.metrics == {"n": 3.0}
    assert isinstance(rep.metrics["n"], float)
    assert rep.arrays == arrays and rep.arrays is not arrays
    empty = req.reply()
    assert (empty.arrays, empty.config, empty.metrics) == ({}, {}, {})


def test_record_round_trip():
    msg = Message(
        "train", arrays={"w": np.arange(3.0)}, config={"lr": 0.1, "tag": "a"}, metrics={"n": 2.0}
    )
    rec = to_record(msg)
    assert set(rec) == {"kind", "arrays", "config", "metrics"}
    assert rec["kind"] == "train" and rec["config"] == msg.config and rec["metrics"] == msg.metrics
    back = from_record(rec)
    assert back.kind == "train" and back.config == msg.config and back.metrics == {"n": 2.0}
    np.testing.assert_array_equal(back.arrays["w"], msg.arrays["w"])
    # the record holds its own containers: changing it does not change the message
    rec["arrays"]["x"] = np.zeros(1)
    rec["config"]["lr"] = 1.0
    rec["metrics"]["n"] = 0.0
    assert set(msg.arrays) == {"w"} and msg.config["lr"] == 0.1 and msg.metrics["n"] == 2.0


def test_from_record_normalises_types_and_fills_gaps():
    back = from_record({"kind": 7, "arrays": {"w": [1, 2]}, "metrics": {"n": 3}})
    assert back.kind == "7"
    assert isinstance(back.arrays["w"], np.ndarray) and back.arrays["w"].tolist() == [1, 2]
    assert back.metrics == {"n": 3.0} and isinstance(back.metrics["n"], float)
    assert back.config == {}
    bare = from_record({"kind": "x"})
    assert (bare.arrays, bare.config, bare.metrics) == ({}, {}, {})
    with pytest.raises(KeyError):
        from_record({"arrays": {}})
