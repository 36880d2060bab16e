"""The grid's own contract: accounting, min_replies, rejections and failures with reasons."""

import logging

import numpy as np
import pytest

from consortium.core import Grid, Message, ReplySpec, RoundRecord, TooFewReplies


class ScriptedGrid(Grid):
    """A runtime whose members answer as scripted: a reply, an exception text, or silence."""

    def __init__(self, num_clients, answers=None, **kw):
        super().__init__(num_clients, **kw)
        self.answers = answers or {}
        self.exchanged = []

    def _exchange(self, messages):
        self.exchanged.append(sorted(messages))
        replies, failures = {}, {}
        for cid, msg in messages.items():
            answer = self.answers.get(cid, "echo")
            if answer == "echo":
                replies[cid] = msg.reply(arrays=msg.arrays, metrics={"n": 1.0})
            elif isinstance(answer, str):
                failures[cid] = answer
            else:
                replies[cid] = answer
        return replies, failures


W = {"w": np.zeros(4, np.float32)}


def train(arrays=W):
    return Message("train", arrays=dict(arrays))


def test_every_reply_is_accounted_for():
    nan = Message("train", arrays={"w": np.full(4, np.nan, np.float32)})
    grid = ScriptedGrid(5, answers={1: "timeout", 3: nan})
    grid.start_round(2)
    msgs = {c: train() for c in (0, 1, 3, 4)}
    replies = grid.send(msgs)
    assert sorted(replies) == [0, 4]
    rec = grid.record
    assert rec.sent == [0, 1, 3, 4]
    assert rec.replied == [0, 4]
    assert rec.failures == {1: "timeout"}
    assert rec.rejected == {3: "array 'w' holds NaN or Inf"}
    assert rec.bytes_down == {c: msgs[c].nbytes for c in (0, 1, 3, 4)}
    assert {c: rec.bytes_up[c] for c in (0, 4)} == {c: replies[c].nbytes for c in (0, 4)}
    assert set(rec.bytes_up) <= {0, 3, 4}  # what failed never came back
    assert rec.as_metrics() == {
        "clients_sent": 4,
        "replies": 2,
        "failures": {"1": "timeout"},
        "rejected": {"3": "array 'w' holds NaN or Inf"},
        "bytes_down": sum(rec.bytes_down.values()),
        "bytes_up": sum(rec.bytes_up.values()),
        "bytes_down_by_client": {str(c): msgs[c].nbytes for c in (0, 1, 3, 4)},
        "bytes_up_by_client": {str(c): n for c, n in sorted(rec.bytes_up.items())},
    }


def test_bytes_add_up_over_several_sends_in_one_round():
    grid = ScriptedGrid(3)
    grid.start_round(1)
    first = grid.send({0: train(), 2: train()})
    grid.send({2: train()})
    assert grid.record.bytes_down == {0: train().nbytes, 2: 2 * train().nbytes}
    assert grid.record.bytes_up == {0: first[0].nbytes, 2: 2 * first[2].nbytes}
    assert grid.record.sent == [0, 2, 2]
    assert grid.record.as_metrics()["clients_sent"] == 2  # distinct members asked
    assert grid.record.replied == [0, 2, 2]
    grid.start_round(2)
    assert grid.record == RoundRecord()


def test_failures_and_rejections_are_logged_with_round_member_and_reason(caplog):
    grid = ScriptedGrid(3, answers={0: "crashed", 1: Message("evaluate")})
    grid.start_round(4)
    with caplog.at_level(logging.WARNING, logger="consortium.grid"):
        grid.send({0: train(), 1: train(), 2: train()})
    assert caplog.messages == [
        "round 4: member 0 failed: crashed",
        "round 4: rejected reply of member 1: reply kind 'evaluate' does not answer 'train'",
    ]


def test_a_rejected_reply_does_not_stop_the_checks_of_later_ones():
    grid = ScriptedGrid(4, answers={0: {"not": "a message"}})
    replies = grid.send({c: train() for c in range(4)})
    assert sorted(replies) == [1, 2, 3]
    assert grid.record.rejected == {0: "reply is a dict, not a Message"}


def test_expect_as_spec_as_function_per_member_or_none():
    half = Message("train", arrays={"w": np.zeros(2, np.float32)})
    grid = ScriptedGrid(3, answers={1: half, 2: half})
    spec = ReplySpec.like(W)
    assert sorted(grid.send({c: train() for c in range(3)}, expect=spec)) == [0]
    assert grid.record.rejected == {
        1: "array 'w' has shape (2,), expected (4,)",
        2: "array 'w' has shape (2,), expected (4,)",
    }

    asked = []

    def per_member(cid):
        asked.append(cid)
        return ReplySpec.like(W, allow_smaller=cid == 1)

    grid.start_round(1)
    assert sorted(grid.send({c: train() for c in range(3)}, expect=per_member)) == [0, 1]
    assert asked == [0, 1, 2]
    grid.start_round(2)
    assert sorted(grid.send({c: train() for c in range(3)})) == [0, 1, 2]  # no spec: any shape


def test_max_reply_bytes_rejects_big_replies():
    big = Message("train", arrays={"w": np.zeros(1000, np.float32)})
    grid = ScriptedGrid(2, answers={1: big}, max_reply_bytes=500)
    assert grid.max_reply_bytes == 500
    assert sorted(grid.send({0: train(), 1: train()})) == [0]
    assert grid.record.rejected == {1: f"reply of {big.nbytes} bytes exceeds the limit of 500"}


def test_rejected_replies_count_in_bytes_up():
    big = Message("train", arrays={"w": np.zeros(1000, np.float32)})
    nan = Message("train", arrays={"w": np.full(4, np.nan, np.float32)})
    grid = ScriptedGrid(3, answers={1: big, 2: nan}, max_reply_bytes=500)
    grid.send({c: train() for c in range(3)})
    assert grid.record.bytes_up[1] == big.nbytes
    assert grid.record.bytes_up[2] == nan.nbytes


def test_unknown_members_are_a_key_error():
    grid = ScriptedGrid(3)
    for bad in (3, -1, 100):
        with pytest.raises(KeyError, match=rf"no such members: \[{bad}\]"):
            grid.send({bad: train()})
    with pytest.raises(KeyError, match=r"no such members: \[3, 4, 5, 6, 7\]"):
        grid.send({c: train() for c in range(9)})
    assert grid.exchanged == [] and grid.record.sent == []
    grid.send({2: train()})  # the last member is a member


@pytest.mark.parametrize(
    ("min_replies", "good", "raises"),
    [
        (0, 0, False),  # accept a round with no reply at all
        (1, 0, True),
        (1, 1, False),
        (2, 1, True),
        (2, 2, False),
        (5, 3, False),  # above the number asked: all of them suffice
        (5, 2, True),
    ],
)
def test_min_replies(min_replies, good, raises):
    answers = {c: "down" for c in range(good, 3)}
    grid = ScriptedGrid(6, answers=answers, min_replies=min_replies)
    grid.start_round(7)
    msgs = {c: train() for c in range(3)}
    if raises:
        with pytest.raises(TooFewReplies) as err:
            grid.send(msgs)
        assert str(err.value) == (
            f"round 7: {good} valid replies of 3, fewer than min_replies={min_replies}"
        )
        assert len(grid.record.failures) == 3 - good  # recorded before raising
    else:
        assert len(grid.send(msgs)) == good


def test_defaults_and_bad_construction():
    grid = ScriptedGrid(2, answers={1: "down"})
    assert (grid.seed, grid.min_replies, grid.max_reply_bytes, grid.round) == (0, 1, None, 0)
    assert grid.record == RoundRecord() and grid.client_ids == [0, 1]
    assert grid.send({0: train(), 1: train()}).keys() == {0}  # one of two: enough by default
    with pytest.raises(TooFewReplies):
        grid.send({1: train()})
    assert ScriptedGrid(1).num_clients == 1
    with pytest.raises(ValueError, match=r"^a federation needs at least one member, got 0$"):
        ScriptedGrid(0)
    with pytest.raises(ValueError, match=r"^min_replies must be >= 0, got -1$"):
        ScriptedGrid(3, min_replies=-1)
    assert ScriptedGrid(3, min_replies=0).min_replies == 0
    assert ScriptedGrid(3, min_replies=10).min_replies == 10
    assert ScriptedGrid(3).state_dict() == {}


def test_sampling_and_member_seeds_are_pinned():
    # pinned like derive_seed: a resumed run must draw what the interrupted one drew
    grid = ScriptedGrid(10, seed=3)
    grid.start_round(1)
    assert grid.sample(3) == [0, 1, 3]
    assert grid.sample(0.5, "dropout") == [0, 1, 6, 7, 8]
    assert grid.client_seed(4) == 6671440954130189967
    fresh = ScriptedGrid(10)
    assert fresh.sample(4) == [0, 4, 5, 7]
    assert fresh.client_seed(2) == 634384561005476967
    # each part of the name matters
    seeds = {grid.client_seed(c) for c in range(10)}
    grid.start_round(2)
    seeds |= {grid.client_seed(c) for c in range(10)}
    assert len(seeds) == 20
